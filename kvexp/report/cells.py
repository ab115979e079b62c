"""From job folders to cells and table layouts.

A *cell* is one experimental condition: (model, dataset, policy and its parameters, budget, slack).
It holds one *run* per seed (a sweep over `seed` repeats every condition); a run's shards
(dataset.shard.index of dataset.shard.count) are merged into one set of rows. Cells are then laid
out per model: one row per policy variant, one column per (budget, slack), with the full cache as
the reference row of each dataset.

Config keys fall into five kinds:
- identity: what a sweep varies and what defines a cell (model.name, dataset.name, policy.*,
  budget.*);
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
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from kvexp.stats.summary import seed_order

from .loading import DONE, FAILED, PREEMPTED, RUNNING, UNKNOWN, Issue, Job, ReportError, Row

IDENTITY_KEYS = ("model.name", "dataset.name", "policy.*", "budget.*")
REPLICATE_KEY = "seed"
SHARD_KEYS = ("dataset.shard.*",)
IGNORED_KEYS = (
    "logger.*",
    "hydra.*",
    "output_dir",
    "output_root",
    "paths.*",
    "generation.batch_size",
    "*wandb*",
    "trace.*",  # how many problems are traced, not how they are solved
    "resume.*",
    "dataset.source",  # hub or bundled copy: the same problems (kvexp.data)
    "model.path",
    "model.cache_dir",
    "model.device",
    "metrics.*",  # which summaries metrics.json computed; the report recomputes from rows
)
#: A dataset.* key that is a sweep-wide choice (problems per cell), checked across the whole report.
SWEEP_WIDE_KEYS = ("dataset.limit",)
#: Keys outside model.* that the config derives from the model preset (conf/generation: temperature
#: = ${model.sampling.temperature}): they must agree within a model, not across models.
MODEL_DERIVED_KEYS = ("generation.temperature", "generation.top_p", "generation.top_k")

#: Identity keys that have their own place in a table; other identity keys are policy parameters.
CORE_KEYS = ("model.name", "dataset.name", "policy.name", "budget.tokens", "budget.slack")

FULL = "full"
#: Row order in tables: the reference first, then the design's policy table, then anything new.
POLICY_ORDER = (FULL, "streaming_llm", "h2o", "tova", "snapkv", "knorm", "rkv", "keydiff", "gkv", "triattention", "random")

#: Order used to pick among duplicate job folders of one shard and to summarise a cell's state.
_STATE_RANK = {DONE: 0, RUNNING: 1, PREEMPTED: 2, UNKNOWN: 3, FAILED: 4}
_ABSENT = "<absent>"

#: The reference study's categories, which also order datasets in the report. Datasets outside
#: them (AIME, LogiQA, new ones) are averaged under "Other" rather than dropped, and kept out of
#: the four study categories so those stay comparable with the paper.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "Math": ("gsm8k", "math500"),
    "Logic": ("strategyqa", "folio"),
    "Reading": ("drop", "reclor"),
    "Commonsense": ("openbookqa", "commonsenseqa"),
}
OTHER = "Other"


def category_of(dataset: str) -> str:
    for name, members in CATEGORIES.items():
        if dataset in members:
            return name
    return OTHER


def _dataset_rank(dataset: str) -> tuple:
    """Study order: Math, Logic, Reading, Commonsense datasets as listed, then others by name."""
    study = [d for members in CATEGORIES.values() for d in members]
    return (study.index(dataset), "") if dataset in study else (len(study), dataset)


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


# --------------------------------------------------------------------------------------------
# Consistency of the configs that end up compared.


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
            values[show(job.config[key]) if key in job.config else _ABSENT].append(job)
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


def config_differences(
    jobs: Sequence[Job], extra_ignored: Sequence[str] = ()
) -> list[KeyDifference]:
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
    mixed = [
        d
        for d in config_differences(jobs)
        if any(fnmatchcase(d.key, p) for p in extra_ignored)
    ]
    return [f"mixed on purpose (--ignore-key): {d.describe()}" for d in mixed]


# --------------------------------------------------------------------------------------------
# Cells and shard merging.


@dataclass(eq=False)
class Run:
    """One seed of a cell, its shards merged."""

    seed: Any
    shard_count: int
    jobs: dict[int, Job]  # shard index -> the job used
    missing_shards: list[int]
    state: str
    rows: list[Row]
    ignored: list[tuple[Job, str]] = field(default_factory=list)  # folders not used, and why
    # full cache only: folders of the same run launched at other budgets (not used, not a problem)
    relaunched: list[Job] = field(default_factory=list)
    cross_shard_duplicates: int = 0  # rows dropped because another shard had the same key

    @property
    def complete(self) -> bool:
        # a job marked done with rows missing (a corrupted or edited samples.jsonl) is not complete
        return (not self.missing_shards and self.state == DONE and bool(self.jobs)
                and not any(j.missing_rows for j in self.jobs.values()))


@dataclass(eq=False)  # compared and hashed by identity: cells key the metrics dictionaries
class Cell:
    """One experimental condition: its runs, one per seed."""

    model: str
    dataset: str
    policy: str
    tokens: int | None
    slack: int | None
    params: tuple[tuple[str, Any], ...]  # other identity keys, sorted
    runs: dict[Any, Run]  # seed -> run
    variant: str = ""  # row label, assigned by the layout

    @property
    def seeds(self) -> list:
        return seed_order(self.runs)

    @property
    def seed_rows(self) -> dict[Any, list[Row]]:
        """seed -> that run's rows: what kvexp.stats pools."""
        return {seed: self.runs[seed].rows for seed in self.seeds}

    @property
    def rows(self) -> list[Row]:
        """Every run's rows (a (problem, sample) appears once per seed)."""
        return [r for seed in self.seeds for r in self.runs[seed].rows]

    @property
    def jobs(self) -> list[Job]:
        """The job folders used, by seed and shard."""
        return [self.runs[s].jobs[i] for s in self.seeds for i in sorted(self.runs[s].jobs)]

    @property
    def config(self) -> dict[str, Any]:
        """The config of one of its jobs (all agree on everything compared)."""
        return self.jobs[0].config if self.jobs else {}

    @property
    def shard_count(self) -> int:
        return max((r.shard_count for r in self.runs.values()), default=1)

    @property
    def missing_shards(self) -> list[int]:
        return sorted({i for r in self.runs.values() for i in r.missing_shards})

    @property
    def relaunched(self) -> list[Job]:
        return [j for r in self.runs.values() for j in r.relaunched]

    @property
    def state(self) -> str:
        return max((r.state for r in self.runs.values()), key=lambda s: _STATE_RANK.get(s, 3), default=UNKNOWN)

    @property
    def complete(self) -> bool:
        return bool(self.runs) and all(r.complete for r in self.runs.values())

    @property
    def is_full(self) -> bool:
        return self.policy == FULL

    @property
    def budget_label(self) -> str:
        if self.is_full:
            return "full cache"
        s = f"B={self.tokens if self.tokens is not None else 'none'}"
        return s if self.slack in (None, 1) else f"{s} S={self.slack}"

    @property
    def label(self) -> str:
        """Short unique description, e.g. 'smollm2 / gsm8k / h2o B=128'."""
        name = self.variant or self.policy
        where = "" if self.is_full else f" {self.budget_label}"
        return f"{self.model} / {self.dataset} / {name}{where}"

    def load_traces(self) -> list[dict[str, Any]]:
        return [t for job in self.jobs for t in job.load_traces()]


def _identity(job: Job) -> tuple:
    cfg = job.config
    is_full = _is_full(job)
    items = []
    for key in sorted(cfg):
        if key_kind(key) != "identity" or key in ("model.name", "dataset.name"):
            continue
        # The full cache has no budget: budgets (and slacks) it was launched with are all the same
        # run, so they must not split it into several reference cells.
        if is_full and key.startswith("budget."):
            continue
        items.append((key, canon(cfg[key])))
    return (show(cfg.get("model.name")), show(cfg.get("dataset.name")), tuple(items))


def _job_preference(job: Job) -> tuple:
    """Sort key: best job first (finished, then most rows, then most recent)."""
    return (_STATE_RANK.get(job.state, 3), -len(job.rows), -job.mtime)


def _launched_budget(job: Job) -> tuple:
    return tuple(sorted((k, canon(v)) for k, v in job.config.items() if k.startswith("budget.")))


def _select_shards(
    jobs: list[Job],
) -> tuple[int, dict[int, Job], list[tuple[Job, str]], list[Job]]:
    """Choose one job per shard index; return (shard count, chosen, ignored with reasons, relaunched).

    Several folders for one shard arise when overlapping sweep folders are reported together or a
    failed cell was rerun elsewhere: the finished (else the fullest, else the newest) is used, and
    the others are listed in the report rather than mixed in. The exception is the full cache
    launched at several budgets (`policy=full,h2o budget=128,256`): it ignores the budget, so those
    folders hold the same run; they come back as `relaunched`, noted but not flagged.
    """
    by_count: dict[int, list[Job]] = defaultdict(list)
    for job in jobs:
        by_count[job.shard_count].append(job)

    def coverage(count: int) -> tuple:
        group = by_count[count]
        indices = {j.shard_index for j in group if 0 <= j.shard_index < count}
        done = sum(j.state == DONE for j in group)
        return (len(indices) == count, done, sum(len(j.rows) for j in group))

    count = max(sorted(by_count), key=coverage)
    ignored = [
        (j, f"shard count {j.shard_count} differs from the {count} used for this cell")
        for c, group in by_count.items()
        if c != count
        for j in group
    ]
    slots: dict[int, list[Job]] = defaultdict(list)
    for job in by_count[count]:
        if 0 <= job.shard_index < count:
            slots[job.shard_index].append(job)
        else:
            ignored.append((job, f"shard index {job.shard_index} outside 0..{count - 1}"))
    chosen, relaunched = {}, []
    for idx, group in slots.items():
        group.sort(key=_job_preference)
        used = chosen[idx] = group[0]
        # the best folder of each other launched budget is a relaunch; more folders of one launched
        # budget are duplicates, as for any policy
        best_of_budget = {}
        for j in group:
            best_of_budget.setdefault(_launched_budget(j) if _is_full(j) else None, j)
        for j in group[1:]:
            if _is_full(j) and best_of_budget[_launched_budget(j)] is j:
                relaunched.append(j)
            else:
                ignored.append((j, f"duplicate of shard {idx}; used {used.path}"))
    return count, chosen, ignored, relaunched


def _is_full(job: Job) -> bool:
    return show(job.config.get("policy.name")) == FULL


def _cell_state(chosen: dict[int, Job]) -> str:
    if not chosen:
        return UNKNOWN
    return max((j.state for j in chosen.values()), key=lambda s: _STATE_RANK.get(s, 3))


def _merge_rows(chosen: dict[int, Job]) -> tuple[list[Row], int]:
    """Concatenate shard rows in shard order; returns (rows, rows dropped as repeated keys)."""
    seen: set[tuple[str, int]] = set()
    rows, dropped = [], 0
    for idx in sorted(chosen):
        for row in chosen[idx].rows:
            if row.key in seen:
                dropped += 1
                continue
            seen.add(row.key)
            rows.append(row)
    return rows, dropped


def _job_issues(job: Job, where: str) -> list[Issue]:
    """Per-job problems worth a line in the report."""
    issues = []
    if job.state == FAILED:
        issues.append(Issue(FAILED, where, job.error_message or "no error message", [job.path]))
    elif job.state in (RUNNING, PREEMPTED):
        done, total = job.status.get("n_done"), job.n_target
        progress = f"{len(job.rows)} rows" + (f" (status: {done}/{total})" if total else "")
        issues.append(Issue(job.state, where, progress, [job.path]))
    elif job.state != DONE:
        detail = f"unrecognised or missing status; {len(job.rows)} rows"
        issues.append(Issue(job.state, where, detail, [job.path]))
    else:
        total = job.n_target
        if isinstance(total, int) and len(job.rows) < total:
            issues.append(
                Issue("short", where, f"state done but {len(job.rows)} of {total} rows", [job.path])
            )
    if job.bad_lines:
        detail = f"{job.bad_lines} unparsable lines in samples.jsonl skipped"
        issues.append(Issue("bad lines", where, detail, [job.path]))
    if job.duplicate_rows:
        detail = f"{job.duplicate_rows} repeated (id, sample_idx) rows; last kept"
        issues.append(Issue("duplicates", where, detail, [job.path]))
    if job.outside_rows:
        detail = (f"{job.outside_rows} rows of problems its config does not ask for (an earlier run with a larger "
                  f"dataset.limit?) not counted, as in its metrics.json")
        issues.append(Issue("extra rows", where, detail, [job.path]))
    return issues


def cell_issues(cell: Cell) -> list[Issue]:
    """Everything about a cell the report must show: unfinished or failed shards, missing shards,
    folders not used, damaged files, per seed. Call after the layout so the labels name the row
    variant."""
    issues = []
    for seed in cell.seeds:
        where = cell.label + (f" seed {show(seed)}" if len(cell.runs) > 1 else "")
        issues += _run_issues(cell.runs[seed], where)
    return issues


def _run_issues(run: Run, where: str) -> list[Issue]:
    count = run.shard_count
    issues = []
    for idx in sorted(run.jobs):
        shard = f" (shard {idx} of {count})" if count > 1 else ""
        issues += _job_issues(run.jobs[idx], where + shard)
    if run.missing_shards:
        issues.append(
            Issue(
                "missing shards",
                where,
                f"no job folder for shard {', '.join(map(str, run.missing_shards))} of {count}"
                f" (indices 0..{count - 1})",
                [j.path for j in run.jobs.values()],
            )
        )
    for job, reason in run.ignored:
        issues.append(Issue("ignored folder", where, reason, [job.path]))
    if run.cross_shard_duplicates:
        detail = f"{run.cross_shard_duplicates} rows repeated across shards; first kept"
        issues.append(Issue("duplicates", where, detail))
    return issues


def build_cells(jobs: Sequence[Job]) -> list[Cell]:
    """Group jobs into cells and merge their shards (issues come later from `cell_issues`)."""
    groups: dict[tuple, list[Job]] = defaultdict(list)
    for job in jobs:
        groups[_identity(job)].append(job)
    cells = []
    for (model, dataset, _), group in groups.items():
        cfg = group[0].config
        policy = show(cfg.get("policy.name"))
        is_full = policy == FULL
        by_seed: dict[Any, list[Job]] = defaultdict(list)
        for job in group:
            by_seed[job.config.get(REPLICATE_KEY)].append(job)
        cell = Cell(
            model=model,
            dataset=dataset,
            policy=policy,
            tokens=None if is_full else cfg.get("budget.tokens"),
            slack=None if is_full else cfg.get("budget.slack"),
            params=tuple(
                (k, cfg[k])
                for k in sorted(cfg)
                if key_kind(k) == "identity"
                and k not in CORE_KEYS
                and not (is_full and k.startswith("budget."))
            ),
            runs={seed: _build_run(seed, jobs) for seed, jobs in by_seed.items()},
        )
        cells.append(cell)
    return cells


def _build_run(seed: Any, jobs: list[Job]) -> Run:
    count, chosen, ignored, relaunched = _select_shards(jobs)
    rows, duplicates = _merge_rows(chosen)
    return Run(
        seed=seed,
        shard_count=count,
        jobs=chosen,
        missing_shards=[i for i in range(count) if i not in chosen],
        state=_cell_state(chosen),
        rows=rows,
        ignored=ignored,
        relaunched=relaunched,
        cross_shard_duplicates=duplicates,
    )


# --------------------------------------------------------------------------------------------
# Layout: rows (policy variants) and columns (budgets) per model.


@dataclass(frozen=True)
class Column:
    """A budget column: tokens and slack (slack shown only when a model's cells use several)."""

    tokens: int | None
    slack: int | None
    label: str


@dataclass
class ModelLayout:
    """Everything of one model: its datasets, row variants, budget columns and cells."""

    model: str
    datasets: list[str]
    variants: list[str]  # row labels, full-cache variants first
    columns: list[Column]
    grid: dict[tuple[str, str, Column], Cell]  # (dataset, variant, column) -> cell (non-full)
    full: dict[tuple[str, str], Cell]  # (dataset, variant) -> full-cache cell
    reference: dict[str, Cell]  # dataset -> the full-cache cell used as reference
    policy_of: dict[str, str]  # variant -> policy name
    notes: list[str] = field(default_factory=list)
    missing: list[Issue] = field(default_factory=list)

    def cell(self, dataset: str, variant: str, column: Column | None) -> Cell | None:
        if column is None:
            return self.full.get((dataset, variant))
        return self.grid.get((dataset, variant, column))

    def cells(self) -> list[Cell]:
        return list(self.full.values()) + list(self.grid.values())


def _policy_rank(policy: str) -> tuple:
    if policy in POLICY_ORDER:
        return (POLICY_ORDER.index(policy), "")
    return (len(POLICY_ORDER), policy)


def _column_of(cell: Cell, slack_varies: bool) -> Column:
    label = f"B={cell.tokens if cell.tokens is not None else 'none'}"
    if slack_varies:
        label += f" S={cell.slack if cell.slack is not None else '?'}"
    return Column(cell.tokens, cell.slack, label)


def _split_params(cells: list[Cell], slot) -> tuple[list[str], list[str]]:
    """Which parameters tell rows of one policy apart: (splitting, following the budget).

    A parameter splits rows when two cells in the same (dataset, column) slot differ in it, e.g.
    h2o normalize=sum vs mean. A parameter that only changes from column to column (a window swept
    as B/2 together with the budget) follows the budget and must not split rows, or every budget
    would become its own row.
    """
    keys = sorted({k for c in cells for k, _ in c.params})
    splitting, following = [], []
    for key in keys:
        per_slot: dict[Any, set[str]] = defaultdict(set)
        for c in cells:
            per_slot[slot(c)].add(canon(dict(c.params).get(key, _ABSENT)))
        if any(len(v) > 1 for v in per_slot.values()):
            splitting.append(key)
        elif len(set().union(*per_slot.values())) > 1:
            following.append(key)
    return splitting, following


def _variant_label(cell: Cell, splitting: list[str]) -> str:
    if not splitting:
        return cell.policy
    params = dict(cell.params)
    shown = ", ".join(f"{k.split('.', 1)[-1]}={show(params.get(k, _ABSENT))}" for k in splitting)
    return f"{cell.policy} ({shown})"


def layout_model(model: str, cells: list[Cell]) -> ModelLayout:
    """Arrange one model's cells into rows and columns and find the holes in the grid."""
    budgeted = [c for c in cells if not c.is_full]
    slack_varies = len({c.slack for c in budgeted}) > 1
    notes: list[str] = []
    by_policy: dict[str, list[Cell]] = defaultdict(list)
    for c in cells:
        by_policy[c.policy].append(c)
    variant_keys: dict[str, tuple] = {}
    policy_of: dict[str, str] = {}
    for policy, group in by_policy.items():
        splitting, following = _split_params(
            group, slot=lambda c: (c.dataset, c.tokens, c.slack)
        )
        for key in following:
            values = sorted(
                {(c.tokens, show(dict(c.params).get(key, _ABSENT))) for c in group},
                key=lambda tv: (tv[0] is None, tv[0] or 0),
            )
            shown = ", ".join(f"B={t}: {v}" for t, v in values)
            notes.append(f"{policy}: {key} follows the budget ({shown})")
        for c in group:
            c.variant = _variant_label(c, splitting)
            policy_of[c.variant] = policy
            variant_keys[c.variant] = (_policy_rank(policy), c.variant)
    variants = sorted(variant_keys, key=variant_keys.get)
    datasets = sorted({c.dataset for c in cells}, key=_dataset_rank)
    columns = sorted(
        {_column_of(c, slack_varies) for c in budgeted},
        key=lambda col: (col.tokens is None, col.tokens or 0, col.slack or 0),
    )
    grid, full = {}, {}
    for c in cells:
        if c.is_full:
            full[(c.dataset, c.variant)] = c
        else:
            grid[(c.dataset, c.variant, _column_of(c, slack_varies))] = c
    reference: dict[str, Cell] = {}
    missing: list[Issue] = []
    full_variants = [v for v in variants if policy_of[v] == FULL]
    for d in datasets:
        refs = [full[(d, v)] for v in full_variants if (d, v) in full]
        if refs:
            reference[d] = refs[0]
            if len(refs) > 1:
                notes.append(f"{d}: several full-cache cells; reference is {refs[0].variant}")
        else:
            detail = "no full-cache cell: no deltas or fidelity"
            missing.append(Issue("missing reference", f"{model} / {d}", detail))
        for v in variants:
            if policy_of[v] == FULL:
                continue
            holes = [col.label for col in columns if (d, v, col) not in grid]
            if holes:
                detail = "no job folder for " + ", ".join(holes)
                missing.append(Issue("missing cells", f"{model} / {d} / {v}", detail))
        missing += _missing_seeds([c for c in cells if c.dataset == d])
    return ModelLayout(
        model, datasets, variants, columns, grid, full, reference, policy_of, notes, missing
    )


def _missing_seeds(cells: list[Cell]) -> list[Issue]:
    """Cells of one (model, dataset) that lack a seed some other cell has: their means cover fewer
    seeds, and a seed the full cache lacks has nothing to be compared with."""
    every = seed_order({s for c in cells for s in c.runs})
    issues = []
    for c in cells:
        absent = [s for s in every if s not in c.runs]
        if absent:
            detail = (
                f"no run for seed {', '.join(map(show, absent))} (others have "
                f"{', '.join(map(show, every))})"
                + ("; policies' runs of that seed have no full cache to compare with" if c.is_full else "")
            )
            issues.append(Issue("missing seeds", c.label, detail, [j.path for j in c.jobs]))
    return issues


def layout_models(cells: list[Cell]) -> list[ModelLayout]:
    """One layout per model, plus a note when models cover different datasets."""
    by_model: dict[str, list[Cell]] = defaultdict(list)
    for c in cells:
        by_model[c.model].append(c)
    layouts = [layout_model(m, by_model[m]) for m in sorted(by_model)]
    all_datasets = set().union(*(set(l.datasets) for l in layouts)) if layouts else set()
    for layout in layouts:
        absent = sorted(all_datasets - set(layout.datasets), key=_dataset_rank)
        if absent:
            detail = "no cells for datasets " + ", ".join(absent)
            layout.missing.append(Issue("missing cells", layout.model, detail))
    return layouts


def state_counts(cells: Iterable[Cell]) -> Counter:
    """How many cells are complete, or in each unfinished state (missing shards counted apart)."""
    counts: Counter = Counter()
    for c in cells:
        if c.complete:
            counts["complete"] += 1
        else:
            counts["missing shards" if c.missing_shards else c.state] += 1
    return counts
