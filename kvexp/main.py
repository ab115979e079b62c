"""Command line: `python -m kvexp.main [-m] key=value ...` (Hydra; configs in conf/).

    python -m kvexp.main                                        # one job with the defaults
    python -m kvexp.main -m policy=h2o,snapkv budget=128,512    # a sweep: one job folder per cell
    python -m kvexp.main -m experiment=paper_r1_distill_llama_8b    # a pinned study
    python -m kvexp.main hydra.run.dir=<job folder>             # resume a job (hydra.sweep.dir=... for a sweep)
    python -m kvexp.main -m hydra/launcher=slurm policy=h2o,snapkv budget=128,512   # every cell a SLURM job
    python -m kvexp.main -m ... dataset.shard.count=4           # each cell as 4 jobs over disjoint problems

Exit status: 0 when every job finished; 1 when a job failed (its status.json says why; every failed cell is
listed with its folder, and with hydra/launcher=slurm or local its job id and log); 75 when no job failed
but some were not run here because another run holds their folders ("running elsewhere"; rerun once it
ends); 128 + signal number when interrupted (SIGTERM: 143, SIGUSR2: 140, Ctrl-C: 130), after the job folder is
flushed. Under hydra/launcher=slurm an interrupted job is requeued and resumes (kvexp.launch).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from kvexp.openmp import prefer_passive_waiting

prefer_passive_waiting()  # before kvexp's packages load torch

from kvexp.files import finds_no_room  # noqa: E402
from kvexp.launch import expand_shards, name_swept_axes, register_launchers  # noqa: E402
from kvexp.launch.launcher import EXIT_RUNNING_ELSEWHERE, FailedCellsCallback  # noqa: E402
from kvexp.pipeline import JobFolderBusy, JobInterrupted, register_resolvers, run_job  # noqa: E402
from kvexp.pipeline.config import quote_numeric_choices  # noqa: E402
from kvexp.pipeline.job import DISK_FULL_FIX  # noqa: E402
from kvexp.pipeline.preflight import JobStopped, PreflightError, check_budget_choices  # noqa: E402
from kvexp.pipeline.signals import signals_as_exceptions  # noqa: E402

# Hydra resolves the run/sweep folder names (${kvexp.cell:...}) before calling main, so the resolver
# must exist at import time. Submitit workers import this module too, so they get it as well.
register_resolvers()
# hydra/launcher=slurm and local are kvexp's launchers (kvexp.launch), which Hydra must know by name
register_launchers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")  # kvexp/conf (see CONFIG_DIR)
def main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    sweep = Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None
    hydra_files = {
        "config.yaml": OmegaConf.to_container(cfg, resolve=False),
        "hydra.yaml": {"hydra": OmegaConf.to_container(hc, resolve=False)},
        "overrides.yaml": list(hc.overrides.task),
    }
    try:
        metrics = run_job(
            cfg, Path(hc.runtime.output_dir), sweep=sweep, overrides=list(hc.overrides.task), hydra_files=hydra_files
        )
    except JobFolderBusy as e:
        if hc.mode == RunMode.MULTIRUN:
            raise  # the sweep lists the cell as running elsewhere
        sys.stderr.write(f"kvexp: {e}\n")
        sys.exit(EXIT_RUNNING_ELSEWHERE)  # not a Hydra error (which exits 1): passes through Hydra
    except OSError as e:
        if not finds_no_room(e):
            raise
        # one line naming the file (status.json records the same): a traceback would add nothing
        raise JobStopped(f"kvexp: {e}; {DISK_FULL_FIX}") from None
    return metrics.get("accuracy")  # the objective, for sweepers that optimise one


def cli() -> None:
    # `budget=128,512` as typed (see kvexp.pipeline.config.quote_numeric_choices); on a multirun,
    # `dataset.shard.count=N` runs every shard (kvexp.launch.shards), and a swept key the folder name does
    # not show (policy.window=16,32) gets a folder per value (kvexp.launch.axes)
    try:
        check_budget_choices(sys.argv[1:])
    except PreflightError as e:
        sys.exit(f"kvexp: {e}")
    sys.argv[1:] = name_swept_axes(quote_numeric_choices(expand_shards(sys.argv[1:])))
    try:
        # from here on a SIGTERM is an exception, so one that comes while Hydra sets the job up still
        # leaves the job folder in a final state (kvexp.pipeline.job.run_job); once interrupted, a second
        # signal (Ctrl-C to a local sweep sends SIGINT and SIGTERM) is ignored until the process exits
        with signals_as_exceptions(ignore_after=True):
            main()
    except (SystemExit, Exception):
        # Hydra's basic launcher ran every cell and reported the first failure: list them all
        outcome = FailedCellsCallback.report()
        if outcome is None:
            raise
        message, status = outcome
        sys.stderr.write(f"\n{message}\n")
        sys.exit(status)
    except JobInterrupted as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    cli()
