"""One job folder and its files (README, "Reading results"): config.yaml, samples.jsonl, traces.jsonl,
status.json, run_meta.json, metrics.json.

samples.jsonl and traces.jsonl are append-only and flushed per row, so a killed job loses at most the
row it was writing. Reopening a folder drops a torn last line, and a sample's trace rows are written
before the sample row, so traces of unfinished samples are dropped too. JSON files are replaced
atomically (write a temporary file, rename), so a reader never sees half of one.
A lock (flock on `.lock`) keeps two processes from running the same folder at once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvexp.files import append_bytes, replaced_atomically

log = logging.getLogger(__name__)

# The files of a job folder; the launcher and the report name them through these too.
CONFIG, SAMPLES, TRACES = "config.yaml", "samples.jsonl", "traces.jsonl"
STATUS, RUN_META, METRICS, LOCK = "status.json", "run_meta.json", "metrics.json", ".lock"
#: Space held while a job runs, given up for status.json's last write when the disk fills (kvexp.pipeline.job)
STATUS_RESERVE = ".status.reserve"

# The states status.json records: a job runs, then is done, failed (with its error) or preempted (resumable).
RUNNING, DONE, FAILED, PREEMPTED = "running", "done", "failed", "preempted"

RowKey = tuple[str, int]


class CorruptedFile(ValueError):
    """A results file with an unreadable line that is not a torn last line: edited or damaged."""


class JobFolderBusy(RuntimeError):
    """Another live process holds this job folder; `holder` says which (pid and host)."""

    def __init__(self, message: str, holder: str = "unknown"):
        super().__init__(message)
        self.holder = holder


def row_key(row: dict[str, Any]) -> RowKey:
    return (str(row["id"]), int(row["sample_idx"]))


def target_keys(problem_ids: Iterable[str], num_samples: int) -> dict[RowKey, int]:
    """The (id, sample_idx) rows a job's config asks for, each with its place in problem order. The one
    rule for which rows of a folder belong to its cell, used by the job's metrics and by the report (a
    folder may hold more rows, e.g. from an earlier run with a larger dataset.limit). status.json
    records the ids and num_samples under `targets`."""
    return {(str(pid), j): i * num_samples + j for i, pid in enumerate(problem_ids) for j in range(num_samples)}


def record_budget(config: dict[str, Any], evicts: bool) -> dict[str, Any]:
    """A job config (plain, nested) with its budget as the folder's config.yaml records it: none for a policy
    that never evicts (the full cache), whatever budget it was launched with (`policy=full,h2o budget=128`
    launches it at 128), so that every launch of it is the same configuration and readers key on a null
    budget rather than on the policy's name. Changes `config` in place and returns it."""
    budget = config.get("budget")
    if not evicts and isinstance(budget, dict):
        budget.update(tokens=None, slack=None, schedule=None)
    return config


#: The one policy that never evicted when folders still recorded the launched budget for it.
_FULL_BEFORE_NULL_BUDGETS = "full"


def as_recorded_now(config: dict[str, Any]) -> dict[str, Any]:
    """A config.yaml read from a job folder (plain, nested), as `record_budget` writes it now: folders of the
    full cache written before hold the budget it was launched with, and folders written before
    `budget.schedule` existed ran the `cap` schedule (the only one then). Changes `config` in place."""
    budget = config.get("budget")
    if isinstance(budget, dict) and "schedule" not in budget:
        budget["schedule"] = None if budget.get("tokens") is None else "cap"
    policy = config.get("policy")
    if isinstance(policy, dict) and policy.get("name") == _FULL_BEFORE_NULL_BUDGETS:
        record_budget(config, evicts=False)
    return config


def read_status(folder: Path) -> dict[str, Any] | None:
    """A job folder's status.json: {} when it has none, None when it is not a JSON object (e.g. torn by a
    kill, which says nothing reliable). A file that cannot be read raises OSError."""
    path = Path(folder) / STATUS
    if not path.exists():
        return {}
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return status if isinstance(status, dict) else None


def write_json(path: Path, obj: Any) -> None:
    """Replace `path` atomically with `obj` as JSON."""
    with replaced_atomically(path) as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")


@dataclass
class JsonLines:
    """What a JSON-lines file holds: its rows (JSON objects), where a torn last line starts (None when
    there is none) and the bad lines elsewhere, as (line number, why), left out of `rows`."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    torn_at: int | None = None
    bad_lines: list[tuple[int, str]] = field(default_factory=list)

    @property
    def torn(self) -> bool:
        return self.torn_at is not None


def scan_jsonl(path: Path) -> JsonLines:
    """Read a JSON-lines file written by an appending, possibly killed, writer, and say what is wrong with
    it without judging: a last line that is not a JSON object, or has no newline after it, is a write cut
    short by a kill; any other such line means the file was edited or damaged. A missing file is empty.
    `read_jsonl` decides what to do about them; the report shows them."""
    scanned = JsonLines()
    if not path.exists():
        return scanned
    lines = path.read_bytes().split(b"\n")  # the last element is what follows the final newline ("" if clean)
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines[: last + 1]):
        if not line.strip():
            continue
        try:
            if i == len(lines) - 1:
                raise ValueError("no newline after it")
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if i == last:
                scanned.torn_at = sum(len(before) + 1 for before in lines[:i])
            else:
                scanned.bad_lines.append((i + 1, str(e)))
            continue
        scanned.rows.append(row)
    return scanned


def read_jsonl(path: Path, *, repair: bool = False, skip_bad: bool = False) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (kvexp's one reader of them). A torn last line is dropped, and with
    `repair` cut off the file so that appends start on a clean line (the one time it is reported). A bad
    line anywhere else means the file was edited or corrupted: refuse rather than guess (CorruptedFile),
    or with `skip_bad` (auxiliary files) leave it out with a warning. The report, which must read damaged
    folders too, takes `scan_jsonl` and lists the bad lines instead."""
    scanned = scan_jsonl(path)
    for number, why in scanned.bad_lines:
        if not skip_bad:
            raise CorruptedFile(
                f"{path}: line {number} is not JSON ({why}); the file was edited or corrupted: "
                f"remove that line (its sample then runs again) or move the folder aside"
            )
        log.warning("%s: line %d is not JSON (%s); left out", path, number, why)
    if repair and scanned.torn:
        size = path.stat().st_size
        log.warning(
            "%s: dropping a torn last line (%d bytes) left by an interrupted run", path.name, size - scanned.torn_at
        )
        with open(path, "r+b") as f:
            f.truncate(scanned.torn_at)
    return scanned.rows


def _count_lines(path: Path) -> int:
    return sum(1 for line in path.read_bytes().split(b"\n") if line.strip()) if path.exists() else 0


class JobFolder:
    def __init__(self, path: Path | str):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @contextmanager
    def locked(self) -> Iterator[JobFolder]:
        """Hold the folder for this process (released when the process dies, whatever the cause)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.file(LOCK), "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "unknown"
                raise JobFolderBusy(
                    f"{self.path} is being run by another process ({holder}); wait for it or use another output folder",
                    holder,
                ) from None
            try:  # who holds it, for the message of a refused second process; not worth failing for (full disk)
                os.ftruncate(f.fileno(), 0)
                os.write(f.fileno(), f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
            except OSError:
                pass
            try:
                yield self
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def holder_alive(self) -> bool | None:
        """Whether a live process holds the folder's lock (None: no lock file, e.g. a folder from before
        locks). A status.json that says `running` while nobody holds the lock was left by a process that
        died without a word (kill -9, the OOM killer, a node crash)."""
        try:
            f = open(self.file(LOCK), "rb")
        except FileNotFoundError:
            return None
        except OSError:
            return None
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            except OSError:
                return None
            fcntl.flock(f, fcntl.LOCK_UN)
            return False

    # ---- resume ----
    def finished_rows(self, *, drop_errors: bool = False) -> list[dict[str, Any]]:
        """Rows already in samples.jsonl (first copy of each (id, sample_idx)), after cutting a torn last
        line. With `drop_errors`, error rows are removed from the file so their samples run again.
        Trace rows of samples that never finished are removed from traces.jsonl."""
        rows = read_jsonl(self.file(SAMPLES), repair=True)
        unique: dict[RowKey, dict[str, Any]] = {}
        for row in rows:
            unique.setdefault(row_key(row), row)
        kept = [r for r in unique.values() if not (drop_errors and r.get("error") is not None)]
        if len(kept) != len(rows):
            self._rewrite(SAMPLES, kept)
        done = {row_key(r) for r in kept}
        # traces are auxiliary: a damaged line there costs that line, never the job
        traces = read_jsonl(self.file(TRACES), repair=True, skip_bad=True)
        kept_traces = [t for t in traces if row_key(t) in done]
        if len(kept_traces) != len(traces) or len(traces) != _count_lines(self.file(TRACES)):
            self._rewrite(TRACES, kept_traces)
        return kept

    def _rewrite(self, name: str, rows: Iterable[dict[str, Any]]) -> None:
        with replaced_atomically(self.file(name)) as f:
            for row in rows:
                f.write(json.dumps(row, default=str) + "\n")

    # ---- appending ----
    @contextmanager
    def appender(self) -> Iterator[RowWriter]:
        # unbuffered: each row reaches the file in its own writes, so a full disk fails that row's write
        # (naming the file) and nothing buffered is left to fail again when the files close
        with (
            open(self.file(SAMPLES), "ab", buffering=0) as samples,
            open(self.file(TRACES), "ab", buffering=0) as traces,
        ):
            yield RowWriter(samples, traces)


class RowWriter:
    """Appends finished samples (and their trace rows, first), each straight to its file."""

    def __init__(self, samples, traces):
        self._samples, self._traces = samples, traces

    def write(self, row: dict[str, Any], trace: list[dict[str, Any]] | None = None) -> None:
        if trace:
            key = {"id": row["id"], "sample_idx": row["sample_idx"]}
            append_bytes(self._traces, "".join(json.dumps({**key, **t}, default=str) + "\n" for t in trace).encode())
        append_bytes(self._samples, (json.dumps(row, default=str) + "\n").encode())
