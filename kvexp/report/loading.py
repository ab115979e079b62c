"""Discovery and loading of job folders (README, "Reading results").

A job folder is any folder below the report's input folders that holds `config.yaml` together with
`samples.jsonl` (or, for a job that died before its first sample, `status.json`). Loading keeps only
the sample fields the report uses, so sweeps with long outputs stay cheap in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from kvexp.pipeline.folder import (
    CONFIG,
    DONE,
    FAILED,
    METRICS,
    PREEMPTED,
    RUNNING,
    SAMPLES,
    STATUS,
    TRACES,
    JobFolder,
    as_recorded_now,
    read_status,
    scan_jsonl,
    target_keys,
)
from kvexp.stats import Sample as Row  # the fields of one samples.jsonl row, as every statistic reads them

#: Job states are status.json's (kvexp.pipeline.folder), and one of ours: no status.json and no metrics.json.
UNKNOWN = "unknown"

#: Folders never searched for jobs: Hydra's own copies of the config, W&B run folders and caches
#: contain a `config.yaml` that is not a kvexp job.
_SKIP_DIRS = {".hydra", "wandb", "__pycache__", ".git", ".cache"}


class ReportError(Exception):
    """A problem that stops the report (bad input, mixed configs); the CLI prints it and exits 2."""


@dataclass
class Job:
    """One job folder: one (model, dataset, policy, budget, shard) run."""

    path: Path
    config: dict[str, Any]  # flattened: dotted key -> leaf value
    state: str
    status: dict[str, Any]
    rows: list[Row]
    torn_last_line: bool = False
    bad_lines: int = 0  # unparsable lines other than a torn last line
    duplicate_rows: int = 0  # rows whose (id, sample_idx) appeared earlier; the first one is kept
    outside_rows: int = 0  # rows of problems the job's config does not ask for (status.json `targets`)
    mtime: float = 0.0

    @property
    def shard_index(self) -> int:
        return int(self.config.get("dataset.shard.index") or 0)

    @property
    def shard_count(self) -> int:
        return int(self.config.get("dataset.shard.count") or 1)

    @property
    def n_target(self) -> int | None:
        """Rows the job set out to write, from status.json (the pipeline's n_target)."""
        total = self.status.get("n_target", self.status.get("n_total"))
        return total if isinstance(total, int) else None

    @property
    def missing_rows(self) -> int:
        """Rows the job set out to write and did not (0 when unknown)."""
        total = self.n_target
        return max(0, total - len(self.rows)) if total is not None else 0

    @property
    def decode_totals(self) -> tuple[float, float] | None:
        """(tokens generated, wall seconds of decoding them) over every run of the job, from status.json;
        None for a folder written before status.json kept them."""
        tokens, seconds = (self.status.get(k) for k in ("decode_tokens", "decode_wall_s"))
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (tokens, seconds))
        return (float(tokens), float(seconds)) if ok else None

    @property
    def error_message(self) -> str | None:
        err = self.status.get("error")
        return None if err in (None, "") else str(err)

    def load_traces(self) -> list[dict[str, Any]]:
        """Rows of traces.jsonl (empty when the job wrote none); loaded on demand for the plots."""
        return scan_jsonl(self.path / TRACES).rows  # a damaged line costs that line, as in the pipeline


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to {"a.b.c": leaf}; lists and empty dicts are leaves."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict) and tree:
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = tree
    return out


def load_config(path: Path) -> dict[str, Any]:
    """Read a config.yaml into flattened dotted keys, as the pipeline records configs now.

    The pipeline writes resolved configs; should one still hold interpolations that need Hydra's
    resolvers, they are kept as text rather than failing the whole report.
    """
    try:
        conf = OmegaConf.load(path)
    except Exception as exc:  # noqa: BLE001 - YAML and OmegaConf raise many types
        raise ReportError(f"cannot read {path.name}: {exc}") from exc
    try:
        tree = OmegaConf.to_container(conf, resolve=True)
    except Exception:  # noqa: BLE001 - any resolver failure: fall back to the raw text
        tree = OmegaConf.to_container(conf, resolve=False)
    if not isinstance(tree, dict):
        raise ReportError(f"{path}: config.yaml is not a mapping")
    return flatten(as_recorded_now(tree))  # an older full-cache folder's launched budget read as none


def _job_state(path: Path, status: dict[str, Any]) -> str:
    state = status.get("state")
    if isinstance(state, str) and state:
        return state
    # Jobs from before status.json existed: metrics.json is only written at the end of a run.
    return DONE if (path / METRICS).is_file() else UNKNOWN


def load_job(path: Path) -> Job:
    """Load one job folder."""
    config = load_config(path / CONFIG)
    status = read_status(path)
    if status is None:  # torn by a kill: it says nothing reliable, so the state is "unknown"
        status = {"state": UNKNOWN, "error": "status.json is not a valid JSON object"}
    samples_path = path / SAMPLES
    rows: dict[tuple[str, int], Row] = {}
    torn, bad, dup, mtime = False, 0, 0, 0.0
    if samples_path.is_file():
        scanned = scan_jsonl(samples_path)  # a damaged line is counted and shown, not a reason to stop
        torn, bad = scanned.torn, len(scanned.bad_lines)
        mtime = samples_path.stat().st_mtime
        for obj in scanned.rows:
            if "id" not in obj:
                bad += 1
                continue
            row = Row.from_json(obj)
            if row.key in rows:
                dup += 1  # the pipeline's resume keeps the first copy too
                continue
            rows[row.key] = row
    if status.get("state") == RUNNING and _holder_died(path):
        status = {
            **status,
            "state": PREEMPTED,
            "error": "the process running it died without a word (kill -9, out of memory, a node crash); "
            "rerun to resume",
        }
    kept, outside = _rows_of_cell(list(rows.values()), status)
    return Job(
        path=path,
        config=config,
        state=_job_state(path, status),
        status=status,
        rows=kept,
        torn_last_line=torn,
        bad_lines=bad,
        duplicate_rows=dup,
        outside_rows=outside,
        mtime=mtime,
    )


def _holder_died(path: Path) -> bool:
    """A job folder whose status says running but whose lock no live process holds."""
    return JobFolder(path).holder_alive() is False


def _rows_of_cell(rows: list[Row], status: dict[str, Any]) -> tuple[list[Row], int]:
    """The rows that belong to the job's cell by the pipeline's own rule (kvexp.pipeline.folder.target_keys
    on the `targets` status.json records), and how many others the folder holds. Folders written before
    status.json recorded its targets keep every row."""
    targets = status.get("targets")
    if not isinstance(targets, dict) or not isinstance(targets.get("ids"), list):
        return rows, 0
    keys = target_keys(targets["ids"], int(targets.get("num_samples") or 1))
    kept = [r for r in rows if r.key in keys]
    return kept, len(rows) - len(kept)


def is_job_folder(path: Path) -> bool:
    """True for a folder holding a job's config.yaml and samples (or at least its status), or only its
    status: a job that stopped before it could write its config (e.g. on a full disk)."""
    return (path / STATUS).is_file() or ((path / CONFIG).is_file() and (path / SAMPLES).is_file())


def _configless_issue(path: Path) -> Issue:
    """A job folder with a status.json and no config.yaml: its cell is unknown, so it is listed by folder
    with what its status says (the job stopped before its config was written, e.g. on a full disk)."""
    status = read_status(path)
    if status is None:
        status = {"error": "status.json is not a valid JSON object"}
    state = status.get("state")
    kind = state if state in (FAILED, RUNNING, PREEMPTED) else UNKNOWN
    if kind == RUNNING and _holder_died(path):
        kind = PREEMPTED
    error = status.get("error") or "no error recorded"
    detail = f"no config.yaml (the job stopped before writing it): {error}"
    return Issue(kind, "/".join(path.parts[-3:]), detail, [path])


def find_job_folders(dirs: list[Path], exclude: Path | None = None) -> list[Path]:
    """Every job folder at or below `dirs`, each once, in a stable (sorted) order.

    The search does not descend into a job folder (its subfolders are W&B or Hydra files) nor into
    `exclude` (the report's own output folder).
    """
    found: set[Path] = set()
    excluded = exclude.resolve() if exclude is not None else None
    for top in dirs:
        top = Path(top)
        if not top.is_dir():
            raise ReportError(f"{top}: not a folder")
        for root, subdirs, files in os.walk(top.resolve(), followlinks=False):
            here = Path(root)
            try:
                job_here = is_job_folder(here)
            except OSError:  # a folder we may list but not enter: loading it reports why
                job_here = CONFIG in files
            if job_here:
                found.add(here)
                subdirs[:] = []
                continue
            subdirs[:] = sorted(
                d for d in subdirs if d not in _SKIP_DIRS and (excluded is None or (here / d) != excluded)
            )
    return sorted(found)


def load_jobs(dirs: list[Path], exclude: Path | None = None) -> tuple[list[Job], list[Issue]]:
    """Find and load every job folder below `dirs`.

    A folder whose config.yaml cannot be read is left out and returned as an issue, so one damaged
    folder does not stop the report of a whole sweep.
    """
    paths = find_job_folders(dirs, exclude)
    if not paths:
        shown = ", ".join(str(d) for d in dirs)
        raise ReportError(f"no job folders (config.yaml with samples.jsonl or status.json) below {shown}")
    jobs, issues = [], []
    for p in paths:
        try:
            if not (p / CONFIG).is_file():
                issues.append(_configless_issue(p))
                continue
            jobs.append(load_job(p))
        except ReportError as exc:
            issues.append(Issue("unreadable", p.name, str(exc), [p]))
        except OSError as exc:  # e.g. another user's folder with files only its owner may read
            issues.append(
                Issue(
                    "unreadable",
                    p.name,
                    f"{type(exc).__name__}: {exc}; left out (its owner can share it with chmod -R a+rX)",
                    [p],
                )
            )
    if not jobs:
        reasons = "; ".join(f"{i.paths[0]}: {i.detail}" for i in issues)
        raise ReportError(f"no readable job folder: {reasons}")
    return jobs, issues


@dataclass
class Issue:
    """Something the report must show rather than silently drop."""

    kind: str  # failed, running, preempted, unknown, missing shards, missing cells, ...
    where: str  # human-readable cell or table label
    detail: str
    paths: list[Path] = field(default_factory=list)
