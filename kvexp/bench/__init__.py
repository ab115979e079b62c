"""Decode-speed benchmark of kvexp's engine and policies against transformers' `generate`
(`make bench`; run `python -m kvexp.bench --help`).

OpenMP threads wait passively here unless the caller set OMP_WAIT_POLICY: on a machine shared with
other processes, spinning OpenMP threads (the default) wait for a descheduled sibling at every
parallel region, which made 2-thread decode steps 3-8x slower and erratic on the 2-core dev machine;
with passive waiting they ran as fast as on an idle machine. It must be set before torch loads.
"""
import os
import sys

OMP_WAIT_POLICY_PRESET = "OMP_WAIT_POLICY" in os.environ
TORCH_LOADED_FIRST = "torch" in sys.modules
if not OMP_WAIT_POLICY_PRESET and not TORCH_LOADED_FIRST:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
