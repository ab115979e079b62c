"""Weights & Biases tracking of one job.

One W&B run per job: group = the sweep, name = the cell, config = the cell's coordinates (policy,
budget, model, dataset, seed) at the top level plus the full resolved config under `config`. While the
job runs: one point per finished sample. At the end: summary metrics, a table of every sample, and the
per-step traces (resident tokens, cumulative evictions, prompt share) of the traced problems.

Tracking is never the reason a job fails: if W&B cannot start or log, kvexp warns and carries on.
An online run that cannot reach its server within `logger.init_timeout` seconds (no network, no key)
is written offline instead; if even that fails, the job runs without W&B.
Offline mode (the default) writes the run under `<job folder>/wandb/`; `wandb sync` uploads it later.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SAMPLE_COLUMNS = (
    "id",
    "sample_idx",
    "prompt",
    "output",
    "prediction",
    "gold",
    "correct",
    "n_prompt_tokens",
    "n_output_tokens",
    "stop_reason",
    "peak_resident_tokens",
    "n_evicted_tokens",
    "error",
)
#: Seconds wandb.init may wait for its server (logger.init_timeout) before the job goes on offline.
DEFAULT_INIT_TIMEOUT_S = 20.0
TRACE_COLUMNS = ("id", "sample_idx", "step", "resident_tokens", "evicted_tokens", "prompt_resident_share")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _cell_value(value: Any) -> Any:
    """W&B tables want scalars: lists and dicts go in as text."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def start_run(init: dict[str, Any], *, mode: str, timeout: float, where: Path | str) -> Any | None:
    """wandb.init(**init) in `mode`, or None when W&B cannot start (warned, never raised). An online run
    whose server cannot be reached within `timeout` seconds (no network, no key) is written offline under
    `where`/wandb instead, for `wandb sync` (jobs/sync_wandb.sh) to upload later."""
    try:
        import wandb
    except Exception as e:  # noqa: BLE001 - any failure to start tracking is a warning, not an error
        log.warning("W&B did not start (%s: %s); going on without it", type(e).__name__, _first_line(e))
        return None
    # x_disable_meta: the run's metadata would hold the command line, secrets typed on it included
    settings = dict(console="off", silent=True, x_disable_stats=True, x_disable_meta=True, init_timeout=timeout)
    try:
        return wandb.init(mode=mode, settings=wandb.Settings(**settings), **init)
    except Exception as e:  # noqa: BLE001
        if mode == "offline":
            log.warning("W&B did not start (%s: %s); going on without it", type(e).__name__, _first_line(e))
            return None
        log.warning(
            "W&B (mode %s) did not start (%s: %s; its server is waited for logger.init_timeout=%gs); "
            "logging offline under %s/wandb instead (upload later with `wandb sync`)",
            mode,
            type(e).__name__,
            _first_line(e),
            timeout,
            where,
        )
    try:
        return wandb.init(mode="offline", settings=wandb.Settings(**settings), **init)
    except Exception as e:  # noqa: BLE001
        log.warning("W&B did not start offline either (%s: %s); going on without it", type(e).__name__, _first_line(e))
        return None


class WandbTracker:
    def __init__(
        self, logger_cfg: Mapping[str, Any], *, job_dir: Path, name: str, group: str | None, config: dict[str, Any]
    ):
        self.live = bool(logger_cfg.get("log_samples_live", True))
        init = dict(
            project=logger_cfg.get("project") or "kvexp",
            entity=logger_cfg.get("entity"),
            group=logger_cfg.get("group") or group,
            name=name,
            tags=list(logger_cfg.get("tags") or []),
            config=config,
            dir=str(job_dir),  # the job folder owns the run files; WANDB_DIR would scatter them elsewhere
            job_type="eval",
            reinit="finish_previous",
        )
        # wandb waits 90 s by default for a server it cannot reach (a compute node without network)
        timeout = float(logger_cfg.get("init_timeout") or DEFAULT_INIT_TIMEOUT_S)
        self.run = start_run(init, mode=logger_cfg.get("mode") or "offline", timeout=timeout, where=job_dir)
        if self.run is not None:
            import wandb

            self._wandb = wandb

    def _safely(self, what: str, fn, *args, **kwargs) -> None:
        """Call fn (a callable that uses self.run) unless W&B is off; a failure is a warning."""
        if self.run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            log.warning("W&B could not log %s (%s: %s)", what, type(e).__name__, e)

    def log_sample(self, row: dict[str, Any], progress: Mapping[str, Any]) -> None:
        if not self.live:
            return
        point = {
            "sample/correct": float(bool(row.get("correct"))),
            "sample/error": float(row.get("error") is not None),
            "sample/n_output_tokens": row.get("n_output_tokens"),
            **{f"progress/{k}": v for k, v in progress.items()},
        }
        self._safely("a sample", lambda: self.run.log(point))

    def finish(
        self, *, state: str, metrics: Mapping[str, Any] | None, rows: list[dict[str, Any]], traces: list[dict[str, Any]]
    ) -> None:
        if self.run is None:
            return
        if metrics:
            self._safely("metrics", lambda: self.run.summary.update({k: _cell_value(v) for k, v in metrics.items()}))
        self._safely("the state", lambda: self.run.summary.update({"state": state}))
        if rows:
            self._safely("the samples table", self._log_samples, rows)
        if traces:
            self._safely("traces", self._log_traces, traces)
        try:
            self.run.finish(exit_code=0 if state == "done" else 1)
        except Exception as e:  # noqa: BLE001
            log.warning("W&B did not finish cleanly (%s: %s)", type(e).__name__, e)
        self.run = None

    def _log_samples(self, rows: list[dict[str, Any]]) -> None:
        table = self._wandb.Table(
            columns=list(SAMPLE_COLUMNS), data=[[_cell_value(r.get(c)) for c in SAMPLE_COLUMNS] for r in rows]
        )
        self.run.log({"samples": table})

    def _log_traces(self, traces: list[dict[str, Any]]) -> None:
        wandb = self._wandb
        table = wandb.Table(columns=list(TRACE_COLUMNS), data=[[t.get(c) for c in TRACE_COLUMNS] for t in traces])
        logged: dict[str, Any] = {"traces": table}
        by_sample: dict[tuple, list[dict[str, Any]]] = {}
        for t in traces:
            by_sample.setdefault((t["id"], t["sample_idx"]), []).append(t)
        for metric in ("resident_tokens", "evicted_tokens", "prompt_resident_share"):
            keys = sorted(by_sample)
            xs = [[t["step"] for t in by_sample[k]] for k in keys]
            ys = [[t[metric] for t in by_sample[k]] for k in keys]
            logged[f"trace/{metric}"] = wandb.plot.line_series(
                xs=xs, ys=ys, keys=[f"{i}#{s}" for i, s in keys], title=metric, xname="decode step"
            )
        self.run.log(logged)
