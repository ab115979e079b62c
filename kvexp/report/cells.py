"""From job folders to cells: grouping by condition, seeds, and merging shards.

A *cell* is one experimental condition: (model, dataset, policy and its parameters, budget, slack).
It holds one *run* per seed (a sweep over `seed` repeats every condition); a run's shards
(dataset.shard.index of dataset.shard.count) are merged into one set of rows (kvexp.report.layout
then arranges cells into tables).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kvexp.pipeline.folder import DONE, FAILED, PREEMPTED, RUNNING
from kvexp.stats.summary import seed_order

from .config_keys import CORE_KEYS, REPLICATE_KEY, canon, key_kind, show
from .loading import UNKNOWN, Issue, Job, Row

#: Order used to pick among duplicate job folders of one shard and to summarise a cell's state.
_STATE_RANK = {DONE: 0, RUNNING: 1, PREEMPTED: 2, UNKNOWN: 3, FAILED: 4}


def _state_rank(state: str) -> int:
    return _STATE_RANK.get(state, _STATE_RANK[UNKNOWN])


def _worst_state(states: Iterable[str]) -> str:
    """The state that says most about what is left to do (a failed shard makes a failed run)."""
    return max(states, key=_state_rank, default=UNKNOWN)


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
    cross_shard_duplicates: int = 0  # rows dropped because another shard had the same key

    @property
    def complete(self) -> bool:
        # a job marked done with rows missing (a corrupted or edited samples.jsonl) is not complete
        return (
            not self.missing_shards
            and self.state == DONE
            and bool(self.jobs)
            and not any(j.missing_rows for j in self.jobs.values())
        )


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
    def state(self) -> str:
        return _worst_state(r.state for r in self.runs.values())

    @property
    def complete(self) -> bool:
        return bool(self.runs) and all(r.complete for r in self.runs.values())

    @property
    def is_full(self) -> bool:
        """The full cache, which records no budget (kvexp.pipeline.folder.record_budget)."""
        return self.tokens is None

    @property
    def budget_label(self) -> str:
        if self.is_full:
            return "full cache"
        s = f"B={self.tokens}"
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
    items = tuple(
        (key, canon(cfg[key]))
        for key in sorted(cfg)
        if key_kind(key) == "identity" and key not in ("model.name", "dataset.name")
    )
    return (show(cfg.get("model.name")), show(cfg.get("dataset.name")), items)


def _job_preference(job: Job) -> tuple:
    """Sort key: best job first (finished, then most rows, then most recent)."""
    return (_state_rank(job.state), -len(job.rows), -job.mtime)


def _select_shards(jobs: list[Job]) -> tuple[int, dict[int, Job], list[tuple[Job, str]]]:
    """Choose one job per shard index; return (shard count, chosen, ignored with reasons).

    Several folders for one shard arise when overlapping sweep folders are reported together or a
    failed cell was rerun elsewhere: the finished (else the fullest, else the newest) is used, and
    the others are listed in the report rather than mixed in.
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
    chosen = {}
    for idx, group in slots.items():
        group.sort(key=_job_preference)
        used = chosen[idx] = group[0]
        ignored += [(j, f"duplicate of shard {idx}; used {used.path}") for j in group[1:]]
    return count, chosen, ignored


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
            issues.append(Issue("short", where, f"state done but {len(job.rows)} of {total} rows", [job.path]))
    if job.bad_lines:
        detail = f"{job.bad_lines} unparsable lines in samples.jsonl skipped"
        issues.append(Issue("bad lines", where, detail, [job.path]))
    if job.duplicate_rows:
        detail = f"{job.duplicate_rows} repeated (id, sample_idx) rows; last kept"
        issues.append(Issue("duplicates", where, detail, [job.path]))
    if job.outside_rows:
        detail = (
            f"{job.outside_rows} rows of problems its config does not ask for (an earlier run with a larger "
            f"dataset.limit?) not counted, as in its metrics.json"
        )
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
        by_seed: dict[Any, list[Job]] = defaultdict(list)
        for job in group:
            by_seed[job.config.get(REPLICATE_KEY)].append(job)
        cell = Cell(
            model=model,
            dataset=dataset,
            policy=show(cfg.get("policy.name")),
            tokens=cfg.get("budget.tokens"),
            slack=cfg.get("budget.slack"),
            params=tuple((k, cfg[k]) for k in sorted(cfg) if key_kind(k) == "identity" and k not in CORE_KEYS),
            runs={seed: _build_run(seed, jobs) for seed, jobs in by_seed.items()},
        )
        cells.append(cell)
    return cells


def _build_run(seed: Any, jobs: list[Job]) -> Run:
    count, chosen, ignored = _select_shards(jobs)
    rows, duplicates = _merge_rows(chosen)
    return Run(
        seed=seed,
        shard_count=count,
        jobs=chosen,
        missing_shards=[i for i in range(count) if i not in chosen],
        state=_worst_state(j.state for j in chosen.values()),
        rows=rows,
        ignored=ignored,
        cross_shard_duplicates=duplicates,
    )


def state_counts(cells: Iterable[Cell]) -> Counter:
    """How many cells are complete, or in each unfinished state (missing shards counted apart)."""
    counts: Counter = Counter()
    for c in cells:
        if c.complete:
            counts["complete"] += 1
        else:
            counts["missing shards" if c.missing_shards else c.state] += 1
    return counts
