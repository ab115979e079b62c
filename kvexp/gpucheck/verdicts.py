"""Verdicts of the acceptance run: PASS / FAIL against a target, INFO for a figure without one,
NOT RUN for a check this device cannot make (a GPU-only check on a CPU)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kvexp.files import replaced_atomically

PASS, FAIL, INFO, NOT_RUN = "PASS", "FAIL", "INFO", "NOT RUN"


@dataclass(frozen=True)
class Verdict:
    check: str  # a stable name, e.g. organism.h2o.batching
    status: str  # PASS | FAIL | INFO | NOT RUN
    figure: str  # what was measured, formatted
    what: str  # what was compared, and the target

    def line(self) -> str:
        return f"{self.status:<8} {self.check:<32} {self.figure:<30} {self.what}"

    def as_dict(self) -> dict:
        return asdict(self)


def all_equal(check: str, what: str, equal: int, total: int) -> Verdict:
    """PASS when every one of `total` items is equal (and there is at least one)."""
    return Verdict(check, PASS if total > 0 and equal == total else FAIL, f"{equal}/{total} equal", what)


def count_within(check: str, what: str, measured: int, reference: int, total: int, tolerance: int = 1) -> Verdict:
    """PASS when a count (e.g. of correct problems) is within `tolerance` of the reference's."""
    ok = abs(measured - reference) <= tolerance
    return Verdict(
        check, PASS if ok else FAIL, f"{measured}/{total} vs {reference}/{total}", f"{what} (within {tolerance})"
    )


def ratio_within(check: str, what: str, measured: float, planned: float, tolerance: float) -> Verdict:
    """PASS when measured / planned lies within 1 +- tolerance."""
    ratio = measured / planned
    ok = abs(ratio - 1) <= tolerance
    return Verdict(check, PASS if ok else FAIL, f"{ratio:.3f}", f"{what} (within 1 +- {tolerance:g})")


def info(check: str, what: str, figure: str) -> Verdict:
    return Verdict(check, INFO, figure, what)


def not_run(check: str, what: str, reason: str) -> Verdict:
    return Verdict(check, NOT_RUN, reason, what)


def passed(verdicts: list[Verdict]) -> bool:
    """The run passes when no check failed and at least one passed."""
    statuses = {v.status for v in verdicts}
    return FAIL not in statuses and PASS in statuses


class Findings:
    """What the run has found so far: each verdict printed as it comes and the JSON rewritten after it,
    so a slot that ends early keeps everything measured until then. Sections fill their figures in place."""

    def __init__(self, path: Path, machine: dict, settings: dict, print_line=print):
        self.path, self.print_line = path, print_line
        self.verdicts: list[Verdict] = []
        self.result = {"machine": machine, "settings": settings, "verdicts": [], "figures": {}, "passed": False}
        self.started = time.perf_counter()

    def section(self, name: str) -> dict:
        """The figures of one section, saved with every verdict."""
        return self.result["figures"].setdefault(name, {})

    def log(self, message: str) -> None:
        self.print_line(message)

    def add(self, verdict: Verdict) -> None:
        self.verdicts.append(verdict)
        self.print_line(verdict.line())
        self.save()

    def save(self) -> None:
        self.result.update(
            verdicts=[v.as_dict() for v in self.verdicts],
            passed=passed(self.verdicts),
            elapsed_s=round(time.perf_counter() - self.started, 1),
        )
        write_json(self.path, self.result)


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as f:
        f.write(json.dumps(obj, indent=1, default=str) + "\n")
