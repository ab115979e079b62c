"""Verdicts of the acceptance run: PASS / FAIL against a target, INFO for a figure without one,
NOT RUN for a check this device cannot make (a GPU-only check on a CPU)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
