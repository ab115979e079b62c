"""Config keys of job folders: what kind each is, and the check that compared jobs agree.

Config keys fall into five kinds:
- identity: what a sweep varies and what defines a cell (model.name, dataset.name, policy.*,
  budget.*, and a generated dataset's own settings such as dataset.steps);
- replicate: `seed`, which repeats a cell (kvexp.stats pools the seeds: mean, spread, interval);
- shard: dataset.shard.* (which part of the dataset the job ran);
- ignored: bookkeeping that cannot change results (logger, hydra, paths, batch size, W&B, where
  the model and data are read from, which problems are traced);
- fixed: everything else (max_new_tokens, dataset.limit, temperature, model.dtype, ...), which must
  agree between cells that are compared, or the comparison is refused.

Fixed keys are checked at the broadest scope that compares them: across the whole report for
sweep settings (max_new_tokens, num_samples, dataset.limit), per model for model settings
(model.*, and the sampling parameters that the config takes from the model preset), per (model,
dataset) table for dataset settings. Nothing compares numbers across models, so a model's own
sampling preset does not make a multi-model report refuse.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from kvexp.data.registry import GENERATED
from kvexp.pipeline.cell import RESUMABLE_CHANGES

from .loading import Job, ReportError

#: A generated dataset's own settings (kvexp.data.registry.GENERATED: the chain task's steps, facts, ...): a
#: sweep over them (`dataset.steps=10,20`) is reported as variants of each policy, as a policy parameter is.
#: Not `split`: training and held-out problems are not two variants of one result.
GENERATED_DATASET_KEYS = tuple(
    sorted({f"dataset.{o}" for spec in GENERATED.values() for o in spec.options if o != "split"})
)
IDENTITY_KEYS = ("model.name", "dataset.name", "policy.*", "budget.*", *GENERATED_DATASET_KEYS)
REPLICATE_KEY = "seed"
SHARD_KEYS = ("dataset.shard.*",)
#: Keys the report checks itself although a rerun may change them: problems and samples per cell.
_CHECKED_BY_THE_REPORT = ("dataset.limit", "generation.num_samples")
#: Keys that do not change what a row means: the pipeline's one list of what a resumed job may change
#: (output, logging, batching and memory, local paths, metrics.json's summaries), plus what only Hydra
#: and W&B write.
IGNORED_KEYS = tuple(
    pattern for key in RESUMABLE_CHANGES if key not in _CHECKED_BY_THE_REPORT for pattern in (key, f"{key}.*")
) + ("hydra.*", "output_dir", "paths.*", "*wandb*")
#: A dataset.* key that is a sweep-wide choice (problems per cell), checked across the whole report.
SWEEP_WIDE_KEYS = ("dataset.limit",)
#: Keys outside model.* that the config derives from the model preset (conf/generation: temperature
#: = ${model.sampling.temperature}): they must agree within a model, not across models.
MODEL_DERIVED_KEYS = ("generation.temperature", "generation.top_p", "generation.top_k")

#: Identity keys that have their own place in a table; other identity keys are policy parameters.
CORE_KEYS = ("model.name", "dataset.name", "policy.name", "budget.tokens", "budget.slack")

#: How a key that one job has and another lacks is shown.
ABSENT = "<absent>"


def key_kind(key: str, extra_ignored: Sequence[str] = ()) -> str:
    """Classify a dotted config key: 'shard', 'identity', 'replicate', 'ignored' or 'fixed'."""
    if key == REPLICATE_KEY:
        return "replicate"
    if any(fnmatchcase(key, p) for p in SHARD_KEYS):
        return "shard"
    if any(fnmatchcase(key, p) for p in IDENTITY_KEYS):
        return "identity"
    if any(fnmatchcase(key, p) for p in (*IGNORED_KEYS, *extra_ignored)):
        return "ignored"
    return "fixed"


def canon(value: Any) -> str:
    """A hashable, comparable text form of a config value (lists and dicts included)."""
    return json.dumps(value, sort_keys=True, default=str)


def show(value: Any) -> str:
    """A config value as a reader would write it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return canon(value)


@dataclass
class KeyDifference:
    """A fixed key with more than one value among compared jobs."""

    key: str
    scope: str  # "" for the whole report, else "model / dataset"
    values: dict[str, list[Job]]  # shown value -> jobs having it

    def describe(self) -> str:
        parts = []
        for value, jobs in sorted(self.values.items(), key=lambda kv: -len(kv[1])):
            n = len(jobs)
            parts.append(f"{value} ({n} job{'s' if n != 1 else ''}, e.g. {jobs[0].path})")
        where = f" [within {self.scope}]" if self.scope else ""
        return f"{self.key}{where}: " + "; ".join(parts)


def _differences(jobs: Sequence[Job], keys: Iterable[str], scope: str) -> list[KeyDifference]:
    out = []
    for key in sorted(keys):
        values: dict[str, list[Job]] = defaultdict(list)
        for job in jobs:
            values[show(job.config[key]) if key in job.config else ABSENT].append(job)
        if len(values) > 1:
            out.append(KeyDifference(key, scope, dict(values)))
    return out


def _scope_of(key: str) -> str:
    """'report', 'model' or 'table': the broadest scope over which a fixed key must agree."""
    if any(fnmatchcase(key, p) for p in SWEEP_WIDE_KEYS):
        return "report"
    if key.startswith("dataset."):
        return "table"
    if key.startswith("model.") or key in MODEL_DERIVED_KEYS:
        return "model"
    return "report"


def config_differences(jobs: Sequence[Job], extra_ignored: Sequence[str] = ()) -> list[KeyDifference]:
    """Fixed keys whose values differ between jobs that the report compares (see module doc)."""
    all_keys = {k for job in jobs for k in job.config}
    fixed = {k for k in all_keys if key_kind(k, extra_ignored) == "fixed"}
    by_scope: dict[str, set[str]] = defaultdict(set)
    for k in fixed:
        by_scope[_scope_of(k)].add(k)
    diffs = _differences(jobs, by_scope["report"], scope="")
    models: dict[str, list[Job]] = defaultdict(list)
    tables: dict[tuple[str, str], list[Job]] = defaultdict(list)
    for job in jobs:
        model, dataset = show(job.config.get("model.name")), show(job.config.get("dataset.name"))
        models[model].append(job)
        tables[(model, dataset)].append(job)
    for model, group in sorted(models.items()):
        diffs += _differences(group, by_scope["model"], scope=model)
    for (model, dataset), group in sorted(tables.items()):
        diffs += _differences(group, by_scope["table"], scope=f"{model} / {dataset}")
    return diffs


def check_consistency(jobs: Sequence[Job], extra_ignored: Sequence[str] = ()) -> list[str]:
    """Refuse (ReportError naming the keys) when compared configs differ in a fixed key.

    Returns notes on keys that differ but were explicitly ignored by the user (`extra_ignored`),
    so the report still says what was mixed.
    """
    diffs = config_differences(jobs, extra_ignored)
    if diffs:
        lines = "\n".join(f"  {d.describe()}" for d in diffs)
        raise ReportError(
            "job configs differ in keys that are not swept, so their results are not comparable:\n"
            f"{lines}\n"
            "Report like runs separately, or pass --ignore-key KEY (glob patterns allowed) for a "
            "difference that does not matter."
        )
    if not extra_ignored:
        return []
    mixed = [d for d in config_differences(jobs) if any(fnmatchcase(d.key, p) for p in extra_ignored)]
    return [f"mixed on purpose (--ignore-key): {d.describe()}" for d in mixed]
