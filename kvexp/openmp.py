"""OpenMP threads wait passively unless the caller set OMP_WAIT_POLICY.

On a CPU shared with other processes (a dev machine, a CPU node running several jobs), spinning
OpenMP threads (the runtime's default) wait for a descheduled sibling at every parallel region: 2-thread
decode steps ran 3-8x slower and erratically on a 2-core machine, and a job beside busy neighbours
decoded ~50x slower. Passive waiting costs nothing on an idle CPU. It must be set before torch loads,
so the entry points call this first.
"""

import os
import sys


def prefer_passive_waiting() -> tuple[bool, bool]:
    """Sets OMP_WAIT_POLICY=PASSIVE if unset and torch is not loaded yet. Returns (the caller had
    set it, torch was loaded first), for records of what took effect."""
    preset, torch_first = "OMP_WAIT_POLICY" in os.environ, "torch" in sys.modules
    if not preset and not torch_first:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return preset, torch_first
