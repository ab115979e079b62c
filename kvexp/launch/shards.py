"""`dataset.shard.count=N` on a multirun command line turns each cell into N jobs.

    python -m kvexp.main -m hydra/launcher=slurm policy=h2o budget=128 dataset.shard.count=4
    # = ... dataset.shard.count=4 dataset.shard.index=range(0,4): 4 jobs over disjoint problems

Each shard runs its own part of the cell's problems (kvexp.data.load_problems: seeded order -> limit ->
shard) into its own folder (`h2o-b128-s1-shard2of4`); the report (kvexp.report) merges the shards of
a cell back into one. An explicit `dataset.shard.index=...` is left alone (e.g. to rerun one shard).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

_COUNT = re.compile(r"^\+{0,2}dataset\.shard\.count=(?P<n>\d+)$")
_INDEX_OR_NODE = re.compile(r"^[+~]{0,2}dataset\.shard(\.index)?(=|$)")
_MULTIRUN = ("-m", "--multirun", "hydra.mode=MULTIRUN")


def is_multirun(args: Sequence[str]) -> bool:
    return any(a in _MULTIRUN for a in args)


def expand_shards(args: Sequence[str]) -> list[str]:
    """Add `dataset.shard.index=range(0,N)` to a multirun command line that sets `dataset.shard.count=N`
    (N > 1, a single number) without choosing the shard index. Other command lines come back unchanged."""
    args = list(args)
    counts = [int(m["n"]) for a in args if (m := _COUNT.match(a))]
    if not counts or counts[-1] < 2 or any(_INDEX_OR_NODE.match(a) for a in args):
        return args
    n = counts[-1]
    if not is_multirun(args):
        print(
            f"kvexp: dataset.shard.count={n} without -m runs shard 0 only; add -m to run all {n} shards "
            f"(or choose one with dataset.shard.index=I)",
            file=sys.stderr,
        )
        return args
    return [*args, f"dataset.shard.index=range(0,{n})"]
