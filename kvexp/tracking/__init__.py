"""Experiment trackers, chosen by the `logger` config group: `wandb` (kvexp.tracking.wandb_tracker) or
`none`. A tracker gets `log_sample(row, progress)` per finished sample and `finish(...)` once, also when
the job fails or is interrupted."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol


class Tracker(Protocol):
    """What a job tells its tracker: every finished sample row with the progress so far, then once how the
    job ended (state, metrics, the cell's rows and traces)."""

    def log_sample(self, row: dict[str, Any], progress: Mapping[str, Any]) -> None: ...

    def finish(self, **kwargs: Any) -> None: ...


class NullTracker:
    """logger=none: tracks nothing, writes nothing."""

    def log_sample(self, row: dict[str, Any], progress: Mapping[str, Any]) -> None:
        pass

    def finish(self, **kwargs: Any) -> None:
        pass


def make_tracker(
    logger_cfg: Mapping[str, Any], *, job_dir: Path, name: str, group: str | None, config: dict[str, Any]
) -> Tracker:
    kind = logger_cfg.get("name", "none")
    if kind == "none":
        return NullTracker()
    if kind == "wandb":
        from kvexp.tracking.wandb_tracker import WandbTracker

        return WandbTracker(logger_cfg, job_dir=job_dir, name=name, group=group, config=config)
    raise ValueError(f"unknown logger {kind!r}; use logger=wandb or logger=none")


__all__ = ["NullTracker", "Tracker", "make_tracker"]
