"""Metrics of a cell, recomputed from its merged sample rows, and comparisons with the full cache.

The numbers come from kvexp.stats (the definition metrics.json uses too), over the cell's runs: one
per seed, each against the full cache's run of the same seed. metrics.json files are never averaged:
shards would be weighted wrongly and intervals cannot be combined, so everything starts from rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvexp.stats import CellStats, PairedStats, cell_stats, paired_stats, resolve_pass_k

from .cells import Cell
from .layout import ModelLayout


@dataclass
class CellResult:
    """A cell, its metrics and (unless it is a full-cache cell) its comparison with the full
    cache."""

    cell: Cell
    metrics: CellStats
    paired: PairedStats | None  # None for full-cache cells and datasets without a reference
    throughput_tokens_per_s: float | None = None  # the jobs' own: tokens over decode wall time, rows together


def throughput(cell: Cell) -> float | None:
    """Tokens generated over the wall time of decoding them, summed over the cell's jobs (shards, seeds,
    each over all its runs): what a job delivers with all its rows decoding together, unlike the per-row
    speed of CellStats.decode_tokens_per_s. None when no job recorded its totals."""
    totals = [t for t in (job.decode_totals for job in cell.jobs) if t is not None]
    seconds = sum(s for _, s in totals)
    return sum(t for t, _ in totals) / seconds if seconds > 0 else None


def _pass_k(cell: Cell) -> list[int] | None:
    """The k the jobs' metrics.json used (metrics.pass_k), so that the report shows the same; the
    default when unset or not valid for these rows."""
    chosen, n = cell.config.get("metrics.pass_k"), cell.config.get("generation.num_samples")
    try:
        return resolve_pass_k(chosen, n) if chosen is not None and isinstance(n, int) else None
    except ValueError:
        return None


def cell_result(cell: Cell, reference: Cell | None) -> CellResult:
    m = cell_stats(cell.seed_rows, _pass_k(cell), cell.config.get("generation.num_samples"))
    paired = None
    if reference is not None and not cell.is_full:
        paired = paired_stats(cell.seed_rows, reference.seed_rows)
    return CellResult(cell, m, paired, throughput(cell))


def evaluate(layout: ModelLayout) -> dict[Cell, CellResult]:
    """Metrics of every cell of a model, and the paired comparison with its dataset's reference."""
    return {cell: cell_result(cell, layout.reference.get(cell.dataset)) for cell in layout.cells()}
