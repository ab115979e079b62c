"""Log the report to Weights & Biases as one summary run in the sweep's group.

wandb is imported only here and only when asked for, so the report works where it is not
installed. The mode follows WANDB_MODE when set, else the sweep's `logger.mode`, else offline (the
project's default): an offline run is written under the report folder and needs no network.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvexp.tracking.wandb_tracker import DEFAULT_INIT_TIMEOUT_S, start_run

from .loading import Job, ReportError
from .tables import Table

DEFAULT_PROJECT = "kvexp"
_SWEEP_DEPTH = 5  # how far above a job folder to look for the sweep's multirun.yaml


@dataclass
class WandbTarget:
    """Where the summary run goes, and how long its server is waited for."""

    project: str
    entity: str | None
    group: str
    mode: str
    init_timeout: float = DEFAULT_INIT_TIMEOUT_S


def _most_common(jobs: Sequence[Job], key: str, kind: type | tuple[type, ...] = str) -> Any:
    values = Counter(job.config[key] for job in jobs if isinstance(job.config.get(key), kind) and job.config[key])
    return values.most_common(1)[0][0] if values else None


def sweep_name(jobs: Sequence[Job], dirs: Sequence[Path]) -> str:
    """The sweep folder's name, which the pipeline uses as the W&B group of a sweep's jobs.

    The sweep folder is the one holding Hydra's multirun.yaml a few levels above the job folders
    (<sweep>/<model>/<dataset>/<cell>); without one, the names of the report's input folders.
    """
    names = set()
    for job in jobs:
        for parent in list(job.path.parents)[:_SWEEP_DEPTH]:
            if (parent / "multirun.yaml").is_file():
                names.add(parent.name)
                break
    if len(names) == 1:
        return names.pop()
    return "+".join(Path(d).resolve().name for d in dirs)


def wandb_target(jobs: Sequence[Job], dirs: Sequence[Path]) -> WandbTarget:
    """Group from config.yaml `logger.group` when set, else the sweep folder's name."""
    group = _most_common(jobs, "logger.group") or sweep_name(jobs, dirs)
    return WandbTarget(
        project=_most_common(jobs, "logger.project") or DEFAULT_PROJECT,
        entity=_most_common(jobs, "logger.entity"),
        group=group,
        mode=os.environ.get("WANDB_MODE") or _most_common(jobs, "logger.mode") or "offline",
        init_timeout=float(_most_common(jobs, "logger.init_timeout", (int, float)) or DEFAULT_INIT_TIMEOUT_S),
    )


def log_report(
    target: WandbTarget,
    tables: Sequence[Table],
    plots: Sequence[Path],
    out: Path,
    config: dict[str, Any],
    extra_tables: dict[str, tuple[list[str], list[list[Any]]]] | None = None,
) -> str | None:
    """Create the summary run, log every table and plot, finish it; returns the run's URL (online) or its
    local folder (offline), or None when W&B could not start. Like a job's run, an online run whose server
    does not answer within the jobs' logger.init_timeout is written offline under `out`/wandb instead
    (jobs/sync_wandb.sh uploads it later)."""
    try:
        import wandb
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ReportError("--wandb needs the wandb package (pip install wandb)") from exc

    out.mkdir(parents=True, exist_ok=True)
    init = dict(
        project=target.project,
        entity=target.entity,
        group=target.group,
        job_type="report",
        name=f"report-{target.group}",
        dir=str(out),
        config=config,
    )
    run = start_run(init, mode=target.mode, timeout=target.init_timeout, where=out)
    if run is None:
        return None
    try:
        payload: dict[str, Any] = {}
        for t in tables:
            payload[f"tables/{t.name}"] = wandb.Table(columns=t.header(), data=t.data())
        for name, (columns, rows) in (extra_tables or {}).items():
            payload[f"tables/{name}"] = wandb.Table(columns=columns, data=rows)
        for p in plots:
            payload[f"plots/{p.stem}"] = wandb.Image(str(p))
        run.log(payload)
        # Offline, the run folder (the parent of run.dir) is what `wandb sync` takes.
        files_dir = getattr(run, "dir", None)
        offline_dir = str(Path(files_dir).parent) if files_dir else str(out)
        location = getattr(run, "url", None) or offline_dir
    finally:
        run.finish()
    return str(location)
