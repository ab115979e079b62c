"""Command line of the sweep report.

    python -m kvexp.report DIR [DIR ...] [--out OUTDIR] [--wandb] [--ignore-key KEY] [--show KIND]

Writes report.md, the CSVs and the plots; prints the tables of each KIND (default: accuracy) to the
terminal, one per (model, dataset).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .build import build_report
from .loading import ReportError
from .tables import KINDS

#: Table kinds --show can print: the per-dataset tables, then the category means.
TABLE_KINDS = [k.key for k in KINDS] + ["category"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kvexp.report",
        description=(
            "Summarise kvexp sweeps: find every job folder below DIR, merge shards into cells, and "
            "write report.md, one CSV per table, cells.csv and PNG plots."
        ),
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="sweep or job folders")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: DIR/report; required with several DIRs)",
    )
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log tables and plots as one summary run in the sweep's W&B group "
        "(WANDB_MODE is respected; offline unless configured)",
    )
    parser.add_argument(
        "--ignore-key",
        action="append",
        default=[],
        metavar="KEY",
        help="accept differing values of a non-swept config key (glob pattern, repeatable), "
        "e.g. --ignore-key model.revision; the report lists what was mixed",
    )
    parser.add_argument(
        "--show",
        action="append",
        choices=[*TABLE_KINDS, "none"],
        default=None,
        metavar="KIND",
        help="also print these tables to the terminal (repeatable; one of "
        f"{', '.join(TABLE_KINDS)}, or none; default: accuracy and prompt)",
    )
    args = parser.parse_args(argv)
    args.show = [k for k in (args.show or ["accuracy", "prompt"]) if k != "none"]
    if args.out is None:
        if len(args.dirs) > 1:
            parser.error("several DIRs: pass --out OUTDIR")
        args.out = args.dirs[0] / "report"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = build_report(args.dirs, args.out, wandb=args.wandb, ignore_keys=args.ignore_key)
    except ReportError as exc:
        print(f"kvexp.report: error: {exc}", file=sys.stderr)
        return 2
    for table in result.tables:
        if table.kind in args.show:
            print(f"\n{table.model} / {table.scope}: {table.title}\n\n{table.markdown()}")
    if any(t.kind in args.show for t in result.tables):
        print()
    n_cells = len(result.results)
    complete = sum(r.cell.complete for r in result.results.values())
    print(f"report: {result.markdown}")
    print(
        f"{n_cells} cells ({complete} complete), {len(result.tables)} tables, "
        f"{len(result.plots)} plots, {len(result.issues)} items need attention"
    )
    if result.wandb_run:
        print(f"W&B: {result.wandb_run}")
    return 0
