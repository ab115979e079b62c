"""Termination signals as exceptions, so a job can flush its files and mark its status before it exits.

SIGTERM (what `kill`, SLURM preemption and submitit send) raises JobInterrupted; Ctrl-C raises Python's
own KeyboardInterrupt. Both derive from BaseException, so Hydra's launchers (which catch Exception to go
on with the next job of a sweep) let them through and the whole sweep stops.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class JobInterrupted(BaseException):
    def __init__(self, signum: int):
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.signal_name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for death by signal


def interruption_name(exc: BaseException) -> str:
    return exc.signal_name if isinstance(exc, JobInterrupted) else "SIGINT"


@contextmanager
def signals_as_exceptions(signums: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[None]:
    """Within the block, the given signals raise JobInterrupted; previous handlers come back after.
    Signal handlers can only be set from the main thread; elsewhere this is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise JobInterrupted(signum)

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
