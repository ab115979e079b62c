"""Checks before Hydra starts a job, for mistakes whose own error would not name the fix: a budget
preset that does not exist (Hydra lists its search path, or prints a traceback for `budget=-5`) and
an output folder that cannot be written (Hydra fails with "Unable to configure handler 'file'")."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback

from kvexp.pipeline.config import CONFIG_DIR


class PreflightError(CompactHydraException):
    """A setting that cannot work; the message names the fix. Hydra prints it without a traceback."""


class JobStopped(CompactHydraException):
    """A job stopped by its surroundings (a full disk), said in one line with the fix; Hydra prints it
    without a traceback."""


# budget=<v>[,<v>...] as typed (not sweep functions such as range(...), which Hydra checks itself)
_BUDGET_CHOICE = re.compile(r"^budget=(?P<values>[^()\[\]{}=]+)$")


def budget_presets() -> list[str]:
    names = [p.stem for p in (CONFIG_DIR / "budget").glob("*.yaml")]
    return sorted(names, key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0, n))


def check_budget_choices(args: Sequence[str]) -> None:
    """Refuse `budget=N` when conf/budget has no N, saying that budget.tokens=N takes any number."""
    presets = budget_presets()
    for arg in args:
        m = _BUDGET_CHOICE.match(arg)
        if not m:
            continue
        for value in (v.strip().strip("'\"") for v in m["values"].split(",")):
            if value in presets:
                continue
            if re.fullmatch(r"-?\d+", value) and int(value) <= 0:
                raise PreflightError(
                    f"budget={value}: a budget is a positive number of KV entries; use e.g. budget=128, "
                    f"or budget=none with policy=full"
                )
            hint = (
                f"budget.tokens={value} sets any budget (budget=N only names the presets)"
                if value.isdigit()
                else "budget.tokens=N sets any positive number of KV entries"
            )
            raise PreflightError(f"budget={value}: no such preset (budget= takes {', '.join(presets)}); {hint}")


def check_writable(folder: Path, what: str) -> None:
    """Create `folder` and a file in it, or fail naming the folder and the setting that moves it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise PreflightError(
            f"cannot write the {what} {folder} ({type(e).__name__}: {e.strerror or e}); choose a "
            f"writable place with output_root=<folder> or hydra.run.dir=<folder> "
            f"(hydra.sweep.dir=<folder> for a sweep)"
        ) from None


class OutputFolderCheck(Callback):
    """Checks that the run or sweep folder can be written before Hydra sets up its log file there.
    Hydra turns an exception from a callback into a warning and goes on, so this one exits."""

    def on_run_start(self, config, **kwargs) -> None:
        self._check(Path(str(config.hydra.run.dir)), "job folder")

    def on_multirun_start(self, config, **kwargs) -> None:
        self._check(Path(str(config.hydra.sweep.dir)), "sweep folder")

    @staticmethod
    def _check(folder: Path, what: str) -> None:
        try:
            check_writable(folder, what)
        except PreflightError as e:
            raise SystemExit(f"kvexp: {e}") from None
