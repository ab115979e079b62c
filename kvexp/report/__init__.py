"""Sweep report: tables, plots and W&B summary of kvexp job folders.

    python -m kvexp.report DIR [DIR ...] [--out OUTDIR] [--wandb] [--ignore-key KEY]

or from Python::

    from kvexp.report import build_report
    result = build_report([Path("multirun/2025-01-01/12-00-00")], Path("report"))
    result.table("accuracy", "gsm8k").value("h2o", "B=128", "accuracy")

Modules: loading (job folders), config_keys (kinds of config keys, the check that compared jobs
agree), cells (grouping, seeds and shard merging), layout (rows and columns per model), metrics
(per-cell numbers, from kvexp.stats), tables, plots, document (report.md), wandb_log, build
(build_report), cli.
"""

from .build import ReportResult, build_report
from .loading import ReportError

__all__ = ["ReportError", "ReportResult", "build_report"]
