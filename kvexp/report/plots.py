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
#: Interval bands are drawn only for panels with at most this many lines: more overlapping bands hide
#: the lines (the report's tables give every interval).
MAX_BANDED_LINES = 4

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
    """One colour per policy, the same in every figure, shared by the policy's variants (a swept
    parameter is drawn as a line style instead: `_lines`); the full cache is black."""
    policies: dict[str, None] = {}
    for layout in layouts:
        for v in layout.variants:
            if not layout.is_full(v):
                policies.setdefault(layout.policy_of[v])
    if len(policies) <= 10:
        palette = [matplotlib.colormaps["tab10"](i) for i in range(10)]
    else:  # tab20's dark shades first, then the light ones: the first ten policies get distinct hues
        tab20 = matplotlib.colormaps["tab20"]
        palette = [tab20(i) for i in range(0, 20, 2)] + [tab20(i) for i in range(1, 20, 2)]
    color_of = {p: mcolors.to_hex(palette[i % len(palette)]) for i, p in enumerate(policies)}
    colors = {}
    for layout in layouts:
        for v in layout.variants:
            colors[v] = FULL_COLOR if layout.is_full(v) else color_of[layout.policy_of[v]]
    return colors


def _panels(n: int, title: str) -> tuple[Figure, list]:
    ncols = 2 if n == 4 else min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(PANEL_W * ncols, PANEL_H * nrows + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=13)
    return fig, axes[:n]


def _legend_handles(axes: list, lines: list[Line] | None, colors: dict[str, str]) -> dict[str, object]:
    """Legend entries: one per line label; or, when the lines have a variant axis (a swept parameter or
    the slack, drawn as line styles), one colour per policy and one style per value of the axis, so a
    sweep of 6 policies with a parameter on and off has 6 + 2 entries instead of 12."""
    handles: dict[str, object] = {}
    axis = [line for line in lines or [] if line.axis]
    if axis:
        for line in lines:
            handles.setdefault(line.policy, Line2D([], [], color=colors[line.variant], linewidth=1.8))
        for line in lines:
            handles.setdefault(line.axis or "policy defaults", Line2D([], [], color="dimgrey", linestyle=line.style))
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if not axis or label.startswith("full cache"):
                handles.setdefault(label, h)
    return handles


def _finish(fig: Figure, axes: list, path: Path, incomplete: bool, lines=None, colors=None) -> Path:
    """One legend beside the panels (`_legend_handles`), then save with every label inside the image."""
    handles = _legend_handles(axes, lines, colors or {})
    if incomplete:
        handles["open marker: incomplete cell"] = Line2D(
            [], [], color="grey", marker="o", markerfacecolor="white", linestyle="none"
        )
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside right upper",
            ncols=1 if len(handles) <= 24 else 2,
            frameon=False,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


#: Line styles of a variant axis (a parameter that splits a policy's rows, e.g. policy.protect_prompt,
#: or the slack when a model uses several): the colour stays the policy's. Not "--", which is the full
#: cache's reference line.
VARIANT_STYLES = ("-", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)))


@dataclass(frozen=True)
class Line:
    variant: str
    label: str
    columns: list[Column]
    style: object = "-"
    policy: str = ""
    axis: str = ""  # the variant's value on the variant axis ("protect_prompt=true", "S=8"); "" if none


def variant_axis(layout: ModelLayout, variant: str) -> str:
    """What tells a variant from its policy's other rows: ``h2o (protect_prompt=true)`` -> ``protect_prompt=true``."""
    rest = variant[len(layout.policy_of[variant]) :].strip()
    return rest[1:-1] if rest.startswith("(") and rest.endswith(")") else rest


def _lines(layout: ModelLayout) -> list[Line]:
    """One line per non-full variant, coloured by its policy; one per (variant, slack) when a model's
    cells use several slacks, since x is the token budget alone. The variant axis (swept parameters,
    slack) picks the line style, the same style for the same value across policies."""
    slacks = sorted({c.slack for c in layout.columns if c.tokens is not None}, key=lambda s: s or 0)
    drafts = []
    for v in layout.variants:
        if layout.is_full(v):
            continue
        for s in slacks:
            cols = [c for c in layout.columns if c.tokens is not None and c.slack == s]
            axis = ", ".join(part for part in (variant_axis(layout, v), f"S={s}" if len(slacks) > 1 else "") if part)
            label = v if len(slacks) == 1 else f"{v} S={s}"
            drafts.append((v, label, cols, axis))
    values = list(dict.fromkeys(sorted(axis for *_, axis in drafts)))
    style = {a: VARIANT_STYLES[i % len(VARIANT_STYLES)] for i, a in enumerate(values)}
    return [Line(v, label, cols, style[axis], layout.policy_of[v], axis) for v, label, cols, axis in drafts]


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
    incomplete, banded = False, len(lines) <= MAX_BANDED_LINES
    if not banded:
        ylabel = ylabel.replace(", 95% band", "")
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
                [v[1] for v in vals if v[1] is not None and banded],
                [v[2] for v in vals if v[2] is not None and banded],
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
    return _finish(fig, axes, path, incomplete, lines, colors)


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
    incomplete, lines = False, _lines(layout)
    for ax, dataset in zip(axes, layout.datasets):
        ref = layout.reference.get(dataset)
        if ref is not None and _finite(results[ref].metrics.kv_bytes_peak):
            m = results[ref].metrics
            _draw_reference(ax, results[ref], _accuracy)
            ax.plot(
                [m.kv_bytes_peak / size], [m.accuracy],
                marker="*", markersize=13, color=FULL_COLOR, linestyle="none",
            )  # fmt: skip
        for line in lines:
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
    return _finish(fig, axes, path, incomplete, lines, colors)


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
    lines = {line.variant: line for line in _lines(layout)}
    panels: list[tuple[Column, list[tuple[Line, list[float], list[float]]]]] = []
    for col in layout.columns:
        series = []
        for v, line in lines.items():
            cell: Cell | None = layout.cell(dataset, v, col)
            if cell is None:
                continue
            steps, shares = mean_prompt_share(cell.load_traces())
            if steps:
                series.append((line, steps, shares))
        if series:
            panels.append((col, series))
    if not panels:
        return None
    title = f"Prompt tokens still resident while decoding — {layout.model} / {dataset}"
    fig, axes = _panels(len(panels), title)
    for ax, (col, series) in zip(axes, panels):
        ax.axhline(1.0, color=FULL_COLOR, linestyle="--", linewidth=1.2, label="full cache (all resident)")
        for line, steps, shares in series:
            ax.plot(steps, shares, color=colors[line.variant], linestyle=line.style, linewidth=1.6, label=line.variant)
        ax.set_title(col.label)
        ax.set_xlabel("decode step")
        ax.set_ylabel("share of prompt tokens resident")
        ax.set_ylim(-0.02, 1.05)
        ax.grid(alpha=0.3)
    return _finish(fig, axes, path, False, list(lines.values()), colors)


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
