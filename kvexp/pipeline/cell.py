"""Naming a cell and telling whether a job folder's results belong to a config.

A cell is one (model, dataset, policy, budget) point of a study. Its folder name must say which cell it
is (`h2o-b128-s1`; `full` for the full cache, which has no budget) so that a person can find a result
from the path, and the same name serves as the W&B run name.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

FULL = "full"

# Config keys that may change between a job and its resumption without changing what a finished row
# means: where output goes, logging, batching, how many problems/samples to cover, local paths, which
# summaries metrics.json computes from the rows.
RESUMABLE_CHANGES = (
    "logger",
    "output_root",
    "trace",
    "resume",
    "dataset.limit",
    "dataset.source",
    "generation.batch_size",
    "generation.max_batch_size",
    "generation.memory_gb",
    "generation.max_prefill_tokens",
    "generation.num_samples",
    "model.path",
    "model.cache_dir",
    "model.device",
    "metrics",
)


def cell_name(
    policy: str, tokens: Any, slack: Any, shard_index: Any = 0, shard_count: Any = 1, schedule: Any = "cap"
) -> str:
    """`<policy>-b<tokens>-s<slack>`, or `full` for the full cache, plus `-interval` under the budget's
    interval schedule (the default `cap` adds nothing) and `-shard<i>of<n>` when a cell is split into shards.

    The full cache ignores the budget, so a sweep such as `policy=full,h2o budget=128,256` launches it
    once per budget into one folder: the first launch runs it, later ones resume a finished folder (or,
    launched in parallel, find it busy and leave it to the job running it: kvexp.pipeline.job)."""
    name = FULL if policy == FULL else f"{policy}-b{'none' if tokens is None else tokens}-s{slack}"
    if policy != FULL and schedule not in (None, "cap"):
        name += f"-{schedule}"
    if int(shard_count) > 1:
        name += f"-shard{shard_index}of{shard_count}"
    return name


def axis_label(key: str, value: Any) -> str:
    """`,key=value`, appended to a folder name for a swept key the cell name does not show
    (kvexp.launch.axes); a '/' in the value becomes '_' so that the folder stays one level."""
    return f",{key}={str(value).replace('/', '_')}"


def register_resolvers() -> None:
    """`${kvexp.cell:policy,tokens,slack,shard_index,shard_count,schedule}` and `${kvexp.axis:key,value}` for
    Hydra's folder names. Idempotent."""
    for name, fn in (("kvexp.cell", cell_name), ("kvexp.axis", axis_label)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def run_identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a config that decides what a sample row means: everything except RESUMABLE_CHANGES.
    (The full cache's budget is recorded as none, so its launches at several budgets agree: folder.record_budget.)"""
    ident = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else copy.deepcopy(dict(cfg))
    ident.pop("hydra", None)
    for dotted in RESUMABLE_CHANGES:
        *parents, leaf = dotted.split(".")
        node = ident
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return ident


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two plain configs differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += differences(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} -> {b!r}"]
