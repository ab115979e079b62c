"""kvexp's submitit launchers (conf/hydra/launcher/slurm.yaml, local.yaml).

They are hydra-submitit-launcher's launchers (one submitit job array per sweep, one array task per
cell, the Hydra job pickled and run by `python -m submitit.core._submit` in the job) with two changes.

Launcher side (`launch`)
    hydra-submitit-launcher returns `[j.results()[0] for j in jobs]`: the first job that died without
    a result (cancelled, killed, out of memory) raises out of the sweep while the others still run,
    and a job that raised inside Hydra surfaces only as the first failed override list. Here every
    job is waited on: job states come from one `sacct` call for all jobs every `poll_s` seconds
    (through kvexp.launch.slurm.array_aware_watcher, which also fixes submitit's reading of queued
    array ranges), each cell is logged as it finishes or fails, and when any cell failed the launcher
    prints the table of the finished cells and raises SweepFailed naming every failed cell: folder,
    job id and SLURM state, reason, status.json, log. `python -m kvexp.main` then exits with status 1.

Job side (`__call__`, in the job)
    SIGTERM and SIGUSR2 raise kvexp.pipeline.JobInterrupted for the whole job. kvexp.pipeline.run_job
    flushes and marks status.json `preempted`; then, unless `scancel` cancelled the job (the
    accounting says CANCELLED), submitit's own SIGUSR2 handler requeues it: `checkpoint()` (inherited
    from hydra-submitit-launcher) re-pickles the same job, submitit counts time-outs against
    `max_num_timeout`, runs `scontrol requeue <job id>` and exits; SLURM starts the job again and it
    resumes from samples.jsonl. A cancelled job raises JobCancelled (reported as failed). Under
    submitit_local only SIGUSR2 (its time limit) requeues.

Options of our own (besides hydra-submitit-launcher's): `python` (the interpreter command for the
job; default: the launching interpreter) and `poll_s`.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf, open_dict

from kvexp.pipeline.cell import register_resolvers
from kvexp.pipeline.folder import JobFolderBusy, read_status
from kvexp.pipeline.signals import JobInterrupted, ignore_further_signals, signals_as_exceptions

log = logging.getLogger(__name__)

#: Options of kvexp's launchers that are not submitit parameters, with their defaults.
OWN_OPTIONS: dict[str, Any] = {"python": None, "poll_s": 30.0}

#: How often (seconds) the launcher repeats why queued cells still wait, when nothing changed.
PENDING_LOG_S = 600.0

#: Names under which Hydra finds kvexp's launchers (Hydra instantiates only `hydra_plugins.*` classes).
ALIAS_PREFIX = "hydra_plugins.kvexp_launcher."


class SweepFailed(CompactHydraException):
    """Some cells of a sweep failed; the message names each one."""


class JobCancelled(RuntimeError):
    """The job was cancelled (scancel): it is not requeued."""


class JobNotRequeued(RuntimeError):
    """The job was interrupted and could not be requeued."""


@dataclass
class CellFailure:
    index: int
    job: str  # the job as its launcher names it: "SLURM job 12_3", "local job 4567", "job #3"
    folder: str
    reason: str
    state: str | None = None
    status: str | None = None
    log: str | None = None
    elsewhere: bool = False  # not failed: another run holds its folder (kvexp.pipeline.JobFolderBusy)

    @property
    def where(self) -> str:
        return f"{self.job}, {self.state}" if self.state else self.job

    def one_line(self) -> str:
        return f"{self.folder} ({self.where}): {self.reason}"

    def describe(self) -> str:
        lines = [f"  {self.folder}  ({self.where})", f"      reason: {self.reason}"]
        if self.status:
            lines.append(f"      status.json: {self.status}")
        if self.log:
            lines.append(f"      log: {self.log}")
        return "\n".join(lines)


def _first_line(text: str, limit: int = 400) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


#: What a SLURM state means for a job that ended without a result, and what to do about it.
_STATE_HINTS = {
    "CANCELLED": "cancelled (scancel)",
    "TIMEOUT": "reached its time limit without being requeued: raise hydra.launcher.timeout_min",
    "OUT_OF_MEMORY": "ran out of memory: raise hydra.launcher.mem_gb",
    "NODE_FAIL": "its node failed",
    "PREEMPTED": "preempted and not requeued",
    "BOOT_FAIL": "its node failed to boot",
    "DEADLINE": "reached its deadline",
    "FAILED": "the job step failed before the job could report (see the log)",
}


def _reason(exc: BaseException, state: str | None = None) -> str:
    """One line saying why a job failed, from what submitit raised (and SLURM's state of the job)."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    text = str(exc)
    if isinstance(exc, FailedJobError) and "----------------------" in text:
        trace = text.split("----------------------")[1]
        lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
        # the exception line of the job's traceback, without the module path of its class
        return re.sub(r"^(?:\w+\.)+(\w+: )", r"\1", lines[-1]) if lines else _first_line(text)
    if isinstance(exc, UncompletedJobError):
        if "has not produced any output" in text:
            word = (state or "UNKNOWN").split()[0].upper()
            return f"ended without a result: {_STATE_HINTS.get(word, 'SLURM state ' + (state or 'unknown'))}"
        return f"UncompletedJobError: {_first_line(text)}"
    return f"{type(exc).__name__}: {_first_line(text)}"


def _status_line(folder: Path, reason: str) -> str | None:
    """What the job folder's status.json says, where it adds to `reason`."""
    try:
        status = read_status(folder)
    except OSError:
        return None
    if not status:
        return None
    line = str(status.get("state"))
    error = status.get("error")
    if error and _first_line(error, 10**6)[:120] not in reason:
        line += f" ({_first_line(error, 200)})"
    if status.get("traceback"):
        line += ", with the traceback"
    if status.get("n_target") is not None:
        line += f"; {status.get('n_done', 0)} of {status['n_target']} samples done"
    return line


#: Exit status of a sweep in which no cell failed but some were not done here, because another run holds
#: their folders ("running elsewhere"): sysexits' EX_TEMPFAIL, "try again later".
EXIT_RUNNING_ELSEWHERE = 75


def _busy(err: BaseException | None) -> bool:
    return isinstance(err, JobFolderBusy)


def sweep_failure_report(config, failures: list[CellFailure], n: int) -> str:
    """The table of the finished cells (printed), then the message naming every cell not done here: the
    failed ones, and those running elsewhere (another run holds their folders)."""
    from kvexp.pipeline.summary import SweepSummaryCallback

    try:  # Hydra skips its end-of-sweep callbacks when a job failed: show the finished cells here
        SweepSummaryCallback().on_multirun_end(config)
    except Exception:  # noqa: BLE001
        pass
    failures = sorted(failures, key=lambda f: f.index)
    cwd = Path.cwd()
    for f in failures:
        try:
            f.folder = str(Path(f.folder).relative_to(cwd))
        except ValueError:
            pass
    failed = [f for f in failures if not f.elsewhere]
    elsewhere = [f for f in failures if f.elsewhere]
    counts = [f"{len(failed)} of {n} cells failed"] if failed else []
    counts += [f"{len(elsewhere)} of {n} running elsewhere"] if elsewhere else []
    lines = [f"kvexp sweep {config.hydra.sweep.dir}: {', '.join(counts)} ({n - len(failures)} finished here)."]
    if failed:
        lines += ["Failed cells:", *(f.describe() for f in failed)]
    if elsewhere:
        lines += [
            "Running elsewhere (another run holds these folders; not failed, and not done here):",
            *(f.describe() for f in elsewhere),
        ]
    if failed:
        lines.append(
            "Fix the cause and run the same command again with hydra.sweep.dir="
            f"{config.hydra.sweep.dir}: finished cells are kept, interrupted ones resume."
        )
    else:
        lines.append(
            f"Exit status {EXIT_RUNNING_ELSEWHERE}: once those runs end, the same command with hydra.sweep.dir="
            f"{config.hydra.sweep.dir} checks them (finished cells are kept)."
        )
    return "\n".join(lines)


def sweep_exit_status(failures: list[CellFailure]) -> int:
    """1 when a cell failed; EXIT_RUNNING_ELSEWHERE when the only cells not done are running elsewhere."""
    return 1 if any(not f.elsewhere for f in failures) else EXIT_RUNNING_ELSEWHERE


class FailedCellsCallback(Callback):
    """Hydra's basic launcher runs every cell of a sweep, then raises the first failure only. This callback
    notes every cell's outcome in the launching process; `kvexp.main` then lists every failed cell, as
    the submitit launchers do (under those, jobs run elsewhere and this notes nothing)."""

    outcomes: list[tuple[Any, JobReturn]] = []

    def on_multirun_start(self, config, **kwargs) -> None:
        FailedCellsCallback.outcomes = []

    def on_job_end(self, config, job_return: JobReturn, **kwargs) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            FailedCellsCallback.outcomes.append((config, job_return))

    @classmethod
    def failures(cls) -> list[CellFailure]:
        """Every cell of the sweep that just ran in this process and did not finish here."""
        failures = []
        for i, (config, ret) in enumerate(cls.outcomes):
            if ret.status != JobStatus.FAILED:
                continue
            folder = Path(str(config.hydra.runtime.output_dir))
            err = ret._return_value
            reason = f"{type(err).__name__}: {_first_line(str(err))}"
            log_file = folder / f"{config.hydra.job.name}.log"
            failures.append(
                CellFailure(
                    i,
                    f"job #{config.hydra.job.num}",
                    str(folder),
                    reason,
                    None,
                    _status_line(folder, reason),
                    str(log_file) if log_file.exists() else None,
                    elsewhere=_busy(err),
                )
            )
        return failures

    @classmethod
    def report(cls) -> tuple[str, int] | None:
        """The report of the sweep that just ran in this process and its exit status, or None if every cell
        finished."""
        failures = cls.failures()
        if not failures:
            return None
        return sweep_failure_report(cls.outcomes[0][0], failures, len(cls.outcomes)), sweep_exit_status(failures)


class _KvexpSubmititLauncher(BaseSubmititLauncher):
    """What both launchers share: waiting on every job, naming every failed cell, requeueing through
    submitit. What differs by executor (watching the queue, whether a signal requeues, stopping) is in
    SlurmLauncher and LocalLauncher."""

    _EXECUTOR = "abstract"  # submitit's name of the executor
    _JOB_WORD = "job"  # how logs and failures name one of its jobs ("SLURM job 12_3")
    _BATCH_WORD = "jobs"  # ... and the batch of them one sweep submits ("SLURM array 12")

    def __init__(self, **params: Any) -> None:
        own = {k: params.pop(k, default) for k, default in OWN_OPTIONS.items()}
        super().__init__(**params)
        # an environment variable that is set but empty means "not set"
        self.params = {k: (None if v == "" else v) for k, v in self.params.items()}
        self.python = own["python"] or None
        self.poll_s = max(1.0, float(own["poll_s"] if own["poll_s"] not in (None, "") else OWN_OPTIONS["poll_s"]))

    # ------------------------------------------------------------------ in the job
    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        # submitit's handler (checkpoint + requeue), set up by submitit before it called us
        submitit_handler = signal.getsignal(signal.SIGUSR2)
        register_resolvers()  # the folder names use ${kvexp.cell:...}
        with signals_as_exceptions(ignore_after=True):  # the job's process exits after this block
            try:
                return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
            except JobInterrupted as e:
                ignore_further_signals()
                self._requeue_or_raise(e, submitit_handler)
                raise  # not reached: _requeue_or_raise exits or raises

    def _requeue_or_raise(self, exc: JobInterrupted, handler: Any) -> None:
        from submitit.core.job_environment import SignalHandler

        if not isinstance(getattr(handler, "__self__", None), SignalHandler):
            raise JobNotRequeued(f"interrupted by {exc.signal_name} outside a submitit job; rerun to resume") from None
        self._check_requeue(exc)
        import subprocess

        try:
            # checkpoint() -> the same job again; time-outs count against max_num_timeout;
            # `scontrol requeue` (SLURM) or a requeue exit code (local); then sys.exit
            handler(exc.signum, None)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
            # SLURM may be requeueing the job itself (preemption with PreemptMode=REQUEUE): leave it to
            # SLURM; if it does not come back, the launcher sees its final state and reports it.
            log.error("could not requeue the job (%s); leaving it to SLURM", err)
            sys.exit(-1)

    def _check_requeue(self, exc: JobInterrupted) -> None:
        """In the job: return when `exc` should requeue it, else raise JobCancelled or JobNotRequeued."""
        raise NotImplementedError

    # ------------------------------------------------------------------ in the launching process
    def _executor(self):
        import submitit

        params = dict(self.params)
        init: dict[str, Any] = {"folder": params.pop("submitit_folder")}
        max_num_timeout = params.pop("max_num_timeout", None)
        if max_num_timeout is not None:
            init[f"{self._EXECUTOR}_max_num_timeout"] = max_num_timeout
        if self.python:
            init[f"{self._EXECUTOR}_python"] = self.python
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        assert len(job_overrides) > 0
        executor = self._executor()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))

        job_params: list[Any] = []
        for idx, overrides in enumerate(job_overrides):
            idx = initial_job_idx + idx
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*job_params))
        self._watch(jobs)
        first = jobs[0].job_id.split("_")[0]
        log.info(
            "submitted %d job%s (%s %s); job logs in %s",
            len(jobs),
            "s" if len(jobs) > 1 else "",
            self._BATCH_WORD,
            first,
            Path(str(self.params["submitit_folder"]).replace("%j", first)).parent,
        )
        try:
            return self._wait_all(jobs, job_overrides, initial_job_idx)
        finally:
            self._remove_template_folder()

    def _remove_template_folder(self) -> None:
        """submitit's local controller creates the folder template itself (`.submitit/%j`, literally) and
        leaves it empty; the logs are in the folders named after the job ids."""
        template = Path(str(self.params["submitit_folder"]))
        if "%" in template.name:
            try:
                template.rmdir()  # only when empty
            except OSError:
                pass

    def _watch(self, jobs) -> None:
        """Set up whatever `_refresh` needs to follow the submitted jobs."""

    def _refresh(self, jobs) -> None:
        """Refresh the job states, every poll_s seconds while waiting."""

    def _wait_all(self, jobs, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        n = len(jobs)
        results: list[JobReturn | None] = [None] * n
        failures: list[CellFailure] = []
        pending = list(range(n))
        finished = 0
        last_refresh = float("-inf")
        try:
            while pending:
                if time.monotonic() - last_refresh >= self.poll_s:
                    self._refresh(jobs)
                    last_refresh = time.monotonic()
                still = []
                for i in pending:
                    if not jobs[i].done():
                        still.append(i)
                        continue
                    ret, failure = self._outcome(i, jobs[i], job_overrides[i], initial_job_idx + i)
                    results[i] = ret
                    finished += 1
                    if failure is not None:
                        failures.append(failure)
                        word = "running ELSEWHERE" if failure.elsewhere else "FAILED"
                        log.error("[%d/%d] cell %s: %s", finished, n, word, failure.one_line())
                    else:
                        log.info(
                            "[%d/%d] cell done: %s",
                            finished,
                            n,
                            self._folder_of(ret, job_overrides[i], initial_job_idx + i, jobs[i]),
                        )
                pending = still
                if pending:  # each check of a job stats its folder: go easy on a shared filesystem
                    time.sleep(min(self.poll_s, 2.0 + len(pending) / 50))
        except (KeyboardInterrupt, JobInterrupted) as stop:
            ignore_further_signals()
            self._stop(
                [jobs[i] for i in pending],
                [job_overrides[i] for i in pending],
                [initial_job_idx + i for i in pending],
                stop,
            )
            raise
        if failures:
            self._fail(failures, n)
        return [r for r in results if r is not None]

    def _stop(self, jobs, overrides, indices, stop: BaseException) -> None:
        """The launcher was told to stop (SIGTERM, Ctrl-C) while `jobs` still run: see to them and say how
        to resume; the caller then re-raises `stop`."""
        raise NotImplementedError

    def _outcome(self, i: int, job, overrides, idx: int) -> tuple[JobReturn | None, CellFailure | None]:
        try:
            ret = job.results()[0]
        except Exception as e:  # noqa: BLE001 - no result: cancelled, killed, out of memory, time limit, not requeued
            state = self._state_without_result(job)
            folder, reason = self._folder_of(None, overrides, idx, job), _reason(e, state)
            if "timed-out too many times" in reason:
                reason += (
                    f" It reached its time limit {1 + int(self.params.get('max_num_timeout') or 0)} times: "
                    "raise hydra.launcher.timeout_min (or max_num_timeout)"
                )
            return None, CellFailure(
                i, self._job_name(job), str(folder), reason, state, _status_line(folder, reason), self._log(job)
            )
        if ret.status == JobStatus.FAILED:  # the job raised; Hydra caught it in the job
            folder, err = self._folder_of(ret, overrides, idx, job), ret._return_value
            reason = f"{type(err).__name__}: {_first_line(str(err))}"
            return ret, CellFailure(
                i,
                self._job_name(job),
                str(folder),
                reason,
                None,
                _status_line(folder, reason),
                self._log(job),
                elsewhere=_busy(err),
            )
        return ret, None

    def _job_name(self, job) -> str:
        return f"{self._JOB_WORD} {job.job_id}"

    def _state_without_result(self, job) -> str | None:
        """The scheduler's word on a job that left no result (None: it has none to give)."""
        return None

    @staticmethod
    def _log(job) -> str | None:
        return str(job.paths.stderr) if job.paths.stderr.exists() else None

    def _folder_of(self, ret: JobReturn | None, overrides, idx: int, job) -> Path:
        """The job folder of a cell (its Hydra sweep subdir)."""
        try:
            if ret is not None and ret.hydra_cfg is not None:
                return Path(str(ret.hydra_cfg.hydra.runtime.output_dir))
            assert self.hydra_context is not None and self.config is not None
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg.hydra.job):
                cfg.hydra.job.id = job.job_id
                cfg.hydra.job.num = idx
            return Path(os.path.abspath(Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)))
        except Exception:  # noqa: BLE001 - naming the cell must not hide the failure
            return Path(str(self.config.hydra.sweep.dir)) / " ".join(filter_overrides(overrides))

    def _fail(self, failures: list[CellFailure], n: int) -> None:
        message = sweep_failure_report(self.config, failures, n)
        status = sweep_exit_status(failures)
        if status != 1:  # nothing failed: not a Hydra error (which exits 1), an exit status of its own
            sys.stderr.write(f"\n{message}\n")
            raise SystemExit(status)
        raise SweepFailed(message)


class SlurmLauncher(_KvexpSubmititLauncher):
    """Every cell a job of one SLURM array: the queue is watched (states from sacct, pending reasons from
    squeue), a signal requeues the job unless SLURM is cancelling or ending it, and a stopped launcher
    leaves the jobs running."""

    _EXECUTOR = "slurm"
    _JOB_WORD = "SLURM job"
    _BATCH_WORD = "SLURM array"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._pending_seen: dict[str, int] = {}  # pending reason -> tasks, as last logged
        self._pending_logged = float("-inf")

    def _check_requeue(self, exc: JobInterrupted) -> None:
        from submitit import JobEnvironment

        from kvexp.launch.slurm import why_stopping

        verdict, state = why_stopping()
        job_id = JobEnvironment().job_id  # <array job>_<task>, as squeue and the launcher show it
        if verdict == "cancelled":
            raise JobCancelled(
                f"cancelled (SLURM job {job_id}: {state}); not requeued. The rows so far "
                f"are kept: rerun the sweep to resume it"
            ) from None
        if verdict == "ending":
            raise JobNotRequeued(
                f"SLURM is ending the job (state {state}) after {exc.signal_name} and the "
                f"accounting does not say why; not requeued. Rerun the sweep to resume it"
            ) from None
        log.warning(
            "%s for SLURM job %s (state %s): checkpoint and requeue through submitit", exc.signal_name, job_id, state
        )

    def _watch(self, jobs) -> None:
        from kvexp.launch.slurm import array_aware_watcher

        watcher = array_aware_watcher()
        for job in jobs:
            job.watcher = watcher
            watcher.register_job(job.job_id)

    def _refresh(self, jobs) -> None:
        """Refresh the job states (one sacct call for all jobs), and look at why queued ones wait."""
        watcher = getattr(jobs[0], "watcher", None)
        if watcher is not None:
            watcher.update()
            self._watch_pending(jobs)

    def _watch_pending(self, jobs) -> None:
        """SLURM's pending reasons for the array's queued tasks (one squeue call). A reason that waiting
        cannot resolve (the request exceeds the partition, a per-job limit, an unknown account) cancels the
        array and fails the launch at once, naming the request, the offer and the settings to change; the
        others (Priority, Resources, ...) are logged when they change and every PENDING_LOG_S seconds."""
        from kvexp.launch.slurm import cancel, never_starts, partition_offer, pending_tasks

        array = jobs[0].job_id.split("_")[0]
        by_reason: dict[str, list[str]] = {}
        partitions = set()
        for task, (reason, partition) in pending_tasks(array).items():
            by_reason.setdefault(reason, []).append(task)
            partitions.add(partition)
        for reason, tasks in by_reason.items():
            meaning = never_starts(reason)
            if meaning is None:
                continue
            cancelled = cancel(array)
            p = self.params
            request = (
                f"{p.get('cpus_per_task')} CPUs, {p.get('mem_gb')} GB memory, {p.get('gpus_per_node') or 0} "
                f"GPU(s), {p.get('timeout_min')} min"
                + "".join(f", {k} {p[k]}" for k in ("partition", "account", "qos", "constraint") if p.get(k))
            )
            offers = "; ".join(f"partition {name}: {partition_offer(name)}" for name in sorted(partitions))
            raise SweepFailed(
                f"SLURM will never start {len(tasks)} cell(s) of this sweep (job array {array}): pending reason "
                f"{reason}, {meaning}. Each job asks for {request}; {offers}. Lower the request with "
                f"hydra.launcher.cpus_per_task=..., hydra.launcher.mem_gb=..., hydra.launcher.gpus_per_node=..., "
                f"hydra.launcher.timeout_min=... (or KVEXP_SLURM_CPUS, KVEXP_SLURM_MEM_GB, KVEXP_SLURM_GPUS, "
                f"KVEXP_SLURM_TIMEOUT_MIN in jobs/site.env), or pick another partition, account or QOS "
                f"(hydra.launcher.partition / KVEXP_SLURM_PARTITION, ...). "
                + (
                    f"The array was cancelled (scancel {array}); nothing ran."
                    if cancelled
                    else f"SLURM did not answer scancel: cancel the array yourself (scancel {array})."
                )
            )
        waiting = {r: len(t) for r, t in by_reason.items() if r not in ("None", "")}  # None: not yet looked at
        now = time.monotonic()
        if waiting and (waiting != self._pending_seen or now - self._pending_logged >= PENDING_LOG_S):
            log.info(
                "%d cell(s) wait in the SLURM queue (%s); `squeue -r -j %s` shows them",
                sum(waiting.values()),
                ", ".join(f"{n} {r}" for r, n in sorted(waiting.items())),
                array,
            )
            self._pending_logged = now
        self._pending_seen = waiting

    def _stop(self, jobs, overrides, indices, stop: BaseException) -> None:
        first = jobs[0].job_id.split("_")[0] if jobs else "?"
        log.warning(
            "stopped waiting: %d job(s) still run under %s %s (scancel %s stops them). Running the same "
            "command again with hydra.sweep.dir=%s resumes every cell.",
            len(jobs),
            self._EXECUTOR,
            first,
            first,
            self.config.hydra.sweep.dir,
        )

    def _state_without_result(self, job) -> str | None:
        # SLURM's word on a job that left no result (cancelled while queued, killed, out of memory)
        if job.paths.result_pickle.exists():
            return None
        try:
            return job.watcher.get_state(job.job_id, mode="cache")
        except Exception:  # noqa: BLE001
            return "UNKNOWN"


class LocalLauncher(_KvexpSubmititLauncher):
    """Every cell a process on this machine (submitit_local): its time limit (SIGUSR2) requeues a job, and
    a stopped launcher stops its jobs."""

    _EXECUTOR = "local"
    _JOB_WORD = "local job"
    _BATCH_WORD = "local job"

    def _check_requeue(self, exc: JobInterrupted) -> None:
        if exc.signum != signal.SIGUSR2:
            # submitit_local sends SIGUSR2 for its time limit; a SIGTERM there means stopping the sweep
            raise JobNotRequeued(f"interrupted by {exc.signal_name}; rerun the sweep to resume") from None

    def _stop(self, jobs, overrides, indices, stop: BaseException, wait_s: float = 60.0) -> None:
        """The launcher was told to stop: pass SIGTERM on to its local jobs (each flushes its rows and
        marks itself preempted), wait for them, and say what stopped and how to resume."""
        name = getattr(stop, "signal_name", "SIGINT")
        for job in jobs:
            process = getattr(job, "_process", None)
            if process is not None and process.poll() is None:
                try:
                    process.send_signal(signal.SIGTERM)  # submitit's local controller forwards it to the job
                except OSError:
                    pass
        deadline = time.monotonic() + wait_s
        alive = [j for j in jobs if getattr(j, "_process", None) is not None and j._process.poll() is None]
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [j for j in alive if j._process.poll() is None]
        folders = [str(self._folder_of(None, o, idx, j)) for j, o, idx in zip(jobs, overrides, indices)]
        lines = [f"{name}: stopped {len(jobs)} running cell(s); rows so far are kept:", *(f"  {f}" for f in folders)]
        if alive:
            pids = " ".join(str(j._process.pid) for j in alive)
            lines.append(f"still running after {wait_s:.0f}s (stop them with kill): pids {pids}")
        lines.append(f"Run the same command again with hydra.sweep.dir={self.config.hydra.sweep.dir} to resume them.")
        log.warning("\n".join(lines))


def register_launchers() -> None:
    """Make kvexp's launchers instantiable by Hydra as hydra_plugins.kvexp_launcher.<name>. Idempotent."""
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()
    for cls in (SlurmLauncher, LocalLauncher):
        plugins.class_name_to_class[ALIAS_PREFIX + cls.__name__] = cls
