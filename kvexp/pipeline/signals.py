"""Termination signals as exceptions, so a job can flush its files and mark its status before it exits.

SIGTERM (what `kill`, `scancel` and SLURM preemption send) and SIGUSR2 (what SLURM sends `signal_delay_s`
before the time limit, through submitit's `--signal=USR2@...`) raise JobInterrupted; Ctrl-C raises
Python's own KeyboardInterrupt. Both derive from BaseException, so Hydra's launchers (which catch
Exception to go on with the next job of a sweep) let them through: the job folder is marked preempted,
and under the submitit launchers (kvexp.launch) the job is then requeued and resumes.

Only the first signal interrupts, whichever of SIGTERM, SIGUSR2 and SIGINT it is. Later ones that
arrive while the job winds down (a requeue or a cancel sends SIGTERM after the SIGUSR2 that started it;
submitit's preemption drill sends SIGTERM then SIGUSR2; Ctrl-C to a local sweep sends each job SIGINT from
the terminal and SIGTERM from submitit) are noted on stderr and ignored, so they cannot cut the flushing
of status.json or the requeue short.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: The signals a job turns into JobInterrupted.
TERMINATION_SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGUSR2)
#: Every signal that stops a job: the termination signals and Ctrl-C (KeyboardInterrupt). Once one of them
#: interrupted, all of them are ignored, so that any pair cannot cut the job's last writes.
STOPPING_SIGNALS: tuple[int, ...] = (*TERMINATION_SIGNALS, signal.SIGINT)


class JobInterrupted(BaseException):
    def __init__(self, signum: int):
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.signal_name}")

    def __reduce__(self):  # picklable (submitit may pickle what a job raised)
        return (type(self), (self.signum,))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for death by signal


def interruption_name(exc: BaseException) -> str:
    return exc.signal_name if isinstance(exc, JobInterrupted) else "SIGINT"


# Shared by nested blocks: once one of them raised, the process is winding down.
_state = {"depth": 0, "interrupted": None}


def _ignore_later(signum, frame) -> None:
    try:
        sys.stderr.write(
            f"kvexp: {signal.Signals(signum).name} received while the job is already stopping "
            f"(after {signal.Signals(_state['interrupted'] or signum).name}); ignored\n"
        )
    except (OSError, ValueError):
        pass


def ignore_further_signals(signums: tuple[int, ...] = STOPPING_SIGNALS) -> None:
    """From now on, the given signals are logged and ignored (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        for s in signums:
            signal.signal(s, _ignore_later)


@contextmanager
def signals_as_exceptions(
    signums: tuple[int, ...] = TERMINATION_SIGNALS, *, ignore_after: bool = False
) -> Iterator[None]:
    """Within the block, the first of the given signals raises JobInterrupted (a first SIGINT raises
    KeyboardInterrupt, as Python's own handler does); later ones, SIGINT included, are ignored.
    Previous handlers come back after the block, unless `ignore_after` (a process's outermost block, which
    exits right after) and a signal interrupted: then they stay ignored, so that a second signal cannot kill
    the process on its way out. Blocks may nest (the submitit launchers wrap the whole
    job, kvexp.pipeline.run_job its own part): a signal interrupts once, whichever block is innermost.
    Signal handlers can only be set from the main thread; elsewhere this is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if _state["interrupted"] is not None:
            _ignore_later(signum, frame)
            return
        _state["interrupted"] = signum
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise JobInterrupted(signum)

    if _state["depth"] == 0:
        _state["interrupted"] = None
    _state["depth"] += 1
    # a process started with SIGINT ignored (nohup, a background job of a script) keeps ignoring it
    watched = (*signums, *(() if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else (signal.SIGINT,)))
    previous = {s: signal.signal(s, handler) for s in dict.fromkeys(watched)}
    try:
        yield
    finally:
        _state["depth"] -= 1
        if ignore_after and _state["interrupted"] is not None:
            ignore_further_signals(tuple(previous))
        else:
            for s, h in previous.items():
                signal.signal(s, h)
