"""`build_report`: job folders in, report folder out (report.md, CSV tables, PNG plots, W&B)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kvexp.files import finds_no_room

from .cells import Cell, build_cells, cell_issues
from .config_keys import check_consistency
from .document import render_markdown
from .layout import ModelLayout, layout_models
from .loading import Issue, ReportError, load_jobs
from .metrics import CellResult, evaluate
from .plots import write_plots
from .tables import Table, category_tables, cells_table, dataset_tables, seeds_table, write_rows_csv

TABLES_DIR, PLOTS_DIR = "tables", "plots"


@dataclass
class ReportResult:
    """What a report run produced: the files, and the same numbers as data."""

    out: Path
    markdown: Path
    csvs: list[Path]  # one per table, plus cells.csv (one row per cell) and seeds.csv (per seed)
    plots: list[Path]
    tables: list[Table]
    layouts: list[ModelLayout]
    results: dict[Cell, CellResult]  # every cell's metrics and comparison with the full cache
    issues: list[Issue]  # failed, running, preempted, missing cells and shards, ignored folders
    notes: list[str] = field(default_factory=list)
    wandb_run: str | None = None  # run URL (online) or local folder (offline)

    @property
    def files(self) -> list[Path]:
        return [self.markdown, *self.csvs, *self.plots]

    def table(self, kind: str, scope: str, model: str | None = None) -> Table:
        """Look up a table: result.table('accuracy', 'gsm8k'), ('category', 'category-Math')."""
        found = [t for t in self.tables if t.kind == kind and t.scope == scope and model in (None, t.model)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} tables match {kind=} {scope=} {model=}")
        return found[0]


def _clear_outputs(out: Path) -> None:
    """Remove CSVs and PNGs of an earlier report in the same folder (the report owns these two
    subfolders), so that the folder never shows tables or plots of cells no longer present."""
    for sub, pattern in ((TABLES_DIR, "*.csv"), (PLOTS_DIR, "*.png")):
        for old in (out / sub).glob(pattern):
            old.unlink()


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """A report folder that cannot be written (a full disk, no permission) is one ReportError naming it."""
    try:
        yield
    except OSError as e:
        what = e.strerror or str(e)
        if finds_no_room(e):
            what = "no space left on device"
        where = f" ({e.filename})" if e.filename else ""
        raise ReportError(
            f"cannot write the report's output in {out}{where}: {what}; free space there or pass --out OUTDIR"
        ) from None


def build_report(
    dirs: Sequence[Path],
    out: Path,
    wandb: bool = False,
    ignore_keys: Sequence[str] = (),
) -> ReportResult:
    """Build the sweep report for every job folder below `dirs` into `out`.

    Raises ReportError when there is nothing to report or when compared configs differ in a key
    that is not swept (`ignore_keys`, glob patterns, accepts named differences).
    """
    dirs = [Path(d) for d in dirs]
    out = Path(out)
    jobs, issues = load_jobs(dirs, exclude=out)
    notes = check_consistency(jobs, ignore_keys)
    cells = build_cells(jobs)
    layouts = layout_models(cells)

    results: dict[Cell, CellResult] = {}
    tables: list[Table] = []
    for layout in layouts:
        results.update(evaluate(layout))
        tables += category_tables(layout, results)
        for dataset in layout.datasets:
            tables += dataset_tables(layout, results, dataset)
        issues += layout.missing
        for cell in layout.cells():
            issues += cell_issues(cell)

    header, rows = cells_table(results)
    seeds_header, seeds_rows = seeds_table(results)
    markdown = out / "report.md"
    with _writing(out):
        out.mkdir(parents=True, exist_ok=True)
        _clear_outputs(out)
        csvs = [t.write_csv(out / TABLES_DIR / f"{t.name}.csv") for t in tables]
        csvs.append(write_rows_csv(out / "cells.csv", header, rows))
        csvs.append(write_rows_csv(out / "seeds.csv", seeds_header, seeds_rows))
        plots = write_plots(layouts, results, out / PLOTS_DIR)
        markdown.write_text(
            render_markdown(
                dirs=dirs, jobs=jobs, cells=cells, layouts=layouts, results=results, tables=tables,
                issues=issues, notes=notes, plots=plots, out=out,
            ),
            encoding="utf-8",
        )  # fmt: skip
    result = ReportResult(
        out=out,
        markdown=markdown,
        csvs=csvs,
        plots=[p for paths in plots.values() for p in paths],
        tables=tables,
        layouts=layouts,
        results=results,
        issues=issues,
        notes=notes,
    )
    if wandb:
        from .wandb_log import log_report, wandb_target  # lazy: wandb is optional

        result.wandb_run = log_report(
            wandb_target(jobs, dirs),
            tables,
            result.plots,
            out,
            config={"dirs": [str(d) for d in dirs], "n_jobs": len(jobs), "n_cells": len(cells)},
            extra_tables={"cells": (header, rows), "seeds": (seeds_header, seeds_rows)},
        )
    return result
