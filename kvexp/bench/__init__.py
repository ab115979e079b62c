"""Decode-speed benchmark of kvexp's engine and policies against transformers' `generate`
(`make bench`; run `python -m kvexp.bench --help`). OpenMP threads wait passively (kvexp.openmp)."""

from kvexp.openmp import prefer_passive_waiting

OMP_WAIT_POLICY_PRESET, TORCH_LOADED_FIRST = prefer_passive_waiting()
