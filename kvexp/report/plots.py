"""PNG plots of a sweep: accuracy (the mean over seeds, with its interval), output length and the
paired length ratio to the full cache against the budget, accuracy against KV memory, and how much
of the prompt stays resident while decoding.

Figures are built with matplotlib's object API on an Agg canvas, never through pyplot, so the
report neither needs a display nor changes the backend of a notebook that imports it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .cells import Cell
from .layout import Column, ModelLayout
from .metrics import CellResult
from .tables import slug

PANEL_W, PANEL_H, DPI = 5.0, 3.6, 110
FULL_COLOR = "black"
BAND_ALPHA = 0.15

#: (value, lower, upper) of a cell for a plotted metric; bounds None when it has no interval.
Metric = Callable[[CellResult], tuple[float, float | None, float | None]]


def _accuracy(r: CellResult) -> tuple[float, float | None, float | None]:
    return r.metrics.accuracy, r.metrics.ci_lo, r.metrics.ci_hi


def _length(r: CellResult) -> tuple[float, float | None, float | None]:
    return r.metrics.mean_output_tokens, None, None


def _length_ratio(r: CellResult) -> tuple[float, float | None, float | None]:
    if r.paired is None:
        return math.nan, None, None
    e = r.paired.length_ratio
    return e.value, e.lo, e.hi


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def variant_colors(layouts: list[ModelLayout]) -> dict[str, str]:
    """One colour per policy variant, the same in every figure (full cache: black)."""
    names = sorted({v for layout in layouts for v in layout.variants if not layout.is_full(v)})
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    colors = {name: mcolors.to_hex(cmap(i % cmap.N)) for i, name in enumerate(names)}
    colors.update({v: FULL_COLOR for layout in layouts for v in layout.variants if layout.is_full(v)})
    return colors


def _panels(n: int, title: str) -> tuple[Figure, list]:
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(PANEL_W * ncols, PANEL_H * nrows + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=13)
    return fig, axes[:n]


def _legend_columns(labels: list[str], width_in: float) -> int:
    """As many legend columns as fit the figure's width: a legend wider than the figure is cut off
    at both sides (one panel holds fewer entries per line than three)."""
    # an entry: its handle and gaps (~0.7 in) plus its text (~0.075 in per character at 10 pt)
    entry_in = 0.7 + 0.075 * max(len(label) for label in labels)
    return max(1, min(len(labels), 5, int(width_in // entry_in)))


def _finish(fig: Figure, axes: list, path: Path, incomplete: bool) -> Path:
    """Shared legend under the panels (one entry per label), then save."""
    handles: dict[str, object] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if incomplete:
        handles["open marker: incomplete cell"] = Line2D(
            [], [], color="grey", marker="o", markerfacecolor="white", linestyle="none"
        )
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncols=_legend_columns(list(handles), fig.get_figwidth()),
            frameon=False,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


#: Line styles per slack when a model uses several (colour stays the policy's); not "--", which
#: is the full cache's reference line.
SLACK_STYLES = ("-", "-.", ":", (0, (5, 1)))


@dataclass(frozen=True)
class Line:
    variant: str
    label: str
    columns: list[Column]
    style: object = "-"


def _lines(layout: ModelLayout) -> list[Line]:
    """One line per non-full variant; one per (variant, slack) when a model's cells use several
    slacks, since x is the token budget alone."""
    slacks = sorted({c.slack for c in layout.columns if c.tokens is not None}, key=lambda s: s or 0)
    out = []
    for v in layout.variants:
        if layout.is_full(v):
            continue
        for i, s in enumerate(slacks):
            cols = [c for c in layout.columns if c.tokens is not None and c.slack == s]
            label = v if len(slacks) == 1 else f"{v} S={s}"
            out.append(Line(v, label, cols, SLACK_STYLES[i % len(SLACK_STYLES)]))
    return out


def _points(
    layout: ModelLayout, results: dict, dataset: str, variant: str, cols: list[Column]
) -> list[tuple[Column, CellResult]]:
    pts = []
    for col in cols:
        cell = layout.cell(dataset, variant, col)
        if cell is not None:
            pts.append((col, results[cell]))
    return pts


def _draw_reference(ax, r: CellResult | None, metric: Metric) -> None:
    if r is None:
        return
    y, lo, hi = metric(r)
    if not _finite(y):
        return
    ax.axhline(y, color=FULL_COLOR, linestyle="--", linewidth=1.5, label="full cache (reference)")
    if _finite(lo) and _finite(hi):
        ax.axhspan(lo, hi, color=FULL_COLOR, alpha=0.08, linewidth=0)


def _draw_series(ax, xs, ys, los, his, complete, color, label, style="-") -> None:
    """A line with markers (open where the cell is incomplete) and an interval band if given."""
    ax.plot(xs, ys, color=color, marker="o", linewidth=1.8, linestyle=style, label=label)
    for x, y, ok in zip(xs, ys, complete):
        if not ok:
            ax.plot([x], [y], marker="o", markersize=7, color=color, markerfacecolor="white", zorder=3)
    if all(_finite(v) for v in (*los, *his)) and los:
        ax.fill_between(xs, los, his, color=color, alpha=BAND_ALPHA, linewidth=0)


def plot_vs_budget(
    layout: ModelLayout,
    results: dict,
    colors: dict[str, str],
    metric: Metric,
    ylabel: str,
    title: str,
    path: Path,
    unit_range: bool = False,
    reference_level: float | None = None,
) -> Path | None:
    """One panel per dataset; x the token budget, one line per policy variant, full cache as a
    horizontal reference (its own value of the metric, or `reference_level` for a metric relative
    to the full cache)."""
    lines = _lines(layout)
    cells = [layout.cell(d, line.variant, c) for d in layout.datasets for line in lines for c in line.columns]
    if not any(c is not None and _finite(metric(results[c])[0]) for c in cells):
        return None
    fig, axes = _panels(len(layout.datasets), f"{title} — {layout.model}")
    incomplete = False
    ticks = sorted({c.tokens for c in layout.columns if c.tokens is not None})
    for ax, dataset in zip(axes, layout.datasets):
        ref = layout.reference.get(dataset)
        if reference_level is None:
            _draw_reference(ax, results.get(ref) if ref is not None else None, metric)
        elif ref is not None:
            ax.axhline(reference_level, color=FULL_COLOR, linestyle="--", linewidth=1.5,
                       label="full cache (reference)")  # fmt: skip
        for line in lines:
            pts = [
                (c, r)
                for c, r in _points(layout, results, dataset, line.variant, line.columns)
                if _finite(metric(r)[0])
            ]
            if not pts:
                continue
            vals = [metric(r) for _, r in pts]
            done = [r.cell.complete for _, r in pts]
            incomplete |= not all(done)
            _draw_series(
                ax,
                [c.tokens for c, _ in pts],
                [v[0] for v in vals],
                [v[1] for v in vals if v[1] is not None],
                [v[2] for v in vals if v[2] is not None],
                done,
                colors[line.variant],
                line.label,
                line.style,
            )
        ax.set_title(dataset)
        ax.set_xlabel("KV budget B (tokens per layer and KV head)")
        ax.set_ylabel(ylabel)
        ax.set_xticks(ticks)
        ax.grid(alpha=0.3)
        if unit_range:
            ax.set_ylim(-0.02, 1.02)
        else:
            ax.set_ylim(bottom=0)
    return _finish(fig, axes, path, incomplete)


def _bytes_unit(values: list[float]) -> tuple[str, float]:
    top = max(values) if values else 1
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if top >= size:
            return unit, size
    return "bytes", 1


def plot_accuracy_vs_memory(layout: ModelLayout, results: dict, colors: dict[str, str], path: Path) -> Path | None:
    """Accuracy (with its interval as error bars) against KV bytes at peak: what memory buys."""
    cells = [c for c in layout.cells() if _finite(results[c].metrics.kv_bytes_peak)]
    if not cells:
        return None
    unit, size = _bytes_unit([results[c].metrics.kv_bytes_peak for c in cells])
    fig, axes = _panels(len(layout.datasets), f"Accuracy vs KV memory at peak — {layout.model}")
    incomplete = False
    for ax, dataset in zip(axes, layout.datasets):
        ref = layout.reference.get(dataset)
        if ref is not None and _finite(results[ref].metrics.kv_bytes_peak):
            m = results[ref].metrics
            _draw_reference(ax, results[ref], _accuracy)
            ax.plot(
                [m.kv_bytes_peak / size], [m.accuracy],
                marker="*", markersize=13, color=FULL_COLOR, linestyle="none",
            )  # fmt: skip
        for line in _lines(layout):
            pts = [
                r
                for _, r in _points(layout, results, dataset, line.variant, line.columns)
                if _finite(r.metrics.kv_bytes_peak) and _finite(r.metrics.accuracy)
            ]
            if not pts:
                continue
            pts.sort(key=lambda r: r.metrics.kv_bytes_peak)
            xs = [r.metrics.kv_bytes_peak / size for r in pts]
            ys = [r.metrics.accuracy for r in pts]
            err = [
                [max(0.0, y - r.metrics.ci_lo) for y, r in zip(ys, pts)],
                [max(0.0, r.metrics.ci_hi - y) for y, r in zip(ys, pts)],
            ]
            done = [r.cell.complete for r in pts]
            incomplete |= not all(done)
            if all(_finite(v) for side in err for v in side):
                ax.errorbar(
                    xs, ys, yerr=err,
                    color=colors[line.variant], linestyle="none", capsize=3, alpha=0.6,
                )  # fmt: skip
            _draw_series(ax, xs, ys, [], [], done, colors[line.variant], line.label, line.style)
        ax.set_title(dataset)
        ax.set_xlabel(f"KV cache at peak ({unit})")
        ax.set_ylabel("accuracy (pass@1)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    return _finish(fig, axes, path, incomplete)


def mean_prompt_share(traces: list[dict]) -> tuple[list[float], list[float]]:
    """Mean share of prompt tokens still resident at each decode step, over traced problems.

    Problems stop at different lengths, so late steps average over the problems still decoding.
    """
    by_step: dict[float, list[float]] = defaultdict(list)
    for t in traces:
        step, share = t.get("step"), t.get("prompt_resident_share")
        if _finite(step) and _finite(share):
            by_step[step].append(share)
    steps = sorted(by_step)
    return steps, [sum(by_step[s]) / len(by_step[s]) for s in steps]


def plot_prompt_share(layout: ModelLayout, dataset: str, colors: dict[str, str], path: Path) -> Path | None:
    """One panel per budget, one line per policy: how much of the prompt the cache still holds."""
    panels: list[tuple[Column, list[tuple[str, list[float], list[float]]]]] = []
    for col in layout.columns:
        series = []
        for v in layout.variants:
            if layout.is_full(v):
                continue
            cell: Cell | None = layout.cell(dataset, v, col)
            if cell is None:
                continue
            steps, shares = mean_prompt_share(cell.load_traces())
            if steps:
                series.append((v, steps, shares))
        if series:
            panels.append((col, series))
    if not panels:
        return None
    title = f"Prompt tokens still resident while decoding — {layout.model} / {dataset}"
    fig, axes = _panels(len(panels), title)
    for ax, (col, series) in zip(axes, panels):
        ax.axhline(1.0, color=FULL_COLOR, linestyle="--", linewidth=1.2, label="full cache (all resident)")
        for v, steps, shares in series:
            ax.plot(steps, shares, color=colors[v], linewidth=1.6, label=v)
        ax.set_title(col.label)
        ax.set_xlabel("decode step")
        ax.set_ylabel("share of prompt tokens resident")
        ax.set_ylim(-0.02, 1.05)
        ax.grid(alpha=0.3)
    return _finish(fig, axes, path, incomplete=False)


def write_plots(layouts: list[ModelLayout], results: dict, out_dir: Path) -> dict[str, list[Path]]:
    """Every plot of the report, as PNG files under `out_dir`; returns the paths per model."""
    colors = variant_colors(layouts)
    written: dict[str, list[Path]] = {}
    for layout in layouts:
        m = slug(layout.model)
        paths = [
            plot_vs_budget(
                layout, results, colors, _accuracy, "accuracy (pass@1), 95% band",
                "Accuracy vs KV budget", out_dir / f"accuracy_vs_budget__{m}.png", unit_range=True,
            ),
            plot_vs_budget(
                layout, results, colors, _length, "mean output tokens",
                "Output length vs KV budget", out_dir / f"length_vs_budget__{m}.png",
            ),
            plot_vs_budget(
                layout, results, colors, _length_ratio,
                "output tokens / full cache's (paired), 95% band",
                "Output length relative to the full cache vs KV budget",
                out_dir / f"length_ratio_vs_budget__{m}.png", reference_level=1.0,
            ),
            plot_accuracy_vs_memory(
                layout, results, colors, out_dir / f"accuracy_vs_kv_bytes__{m}.png"
            ),
        ]  # fmt: skip
        paths += [
            plot_prompt_share(layout, d, colors, out_dir / f"prompt_share__{m}__{slug(d)}.png") for d in layout.datasets
        ]
        written[layout.model] = [p for p in paths if p is not None]
    return written
