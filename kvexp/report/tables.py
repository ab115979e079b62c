"""The report's tables: one row per policy variant, one column per budget, full cache as reference.

Tables are data first (numbers per cell, see `Table.value`), with a Markdown text per cell derived
from the same numbers, so report.md, the CSV files, W&B tables and tests all read one source.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cells import CATEGORIES, FULL, OTHER, ModelLayout, category_of
from .metrics import BOOTSTRAP, CI_METHOD_TEXT, WILSON, CellResult

INCOMPLETE_MARK = "†"
NO_VALUE = "—"


# --------------------------------------------------------------------------------------------
# Table data structures.


@dataclass
class TableCell:
    values: dict[str, Any]  # field -> number (None or NaN when undefined)
    text: str  # Markdown rendering of the same numbers


@dataclass
class TableRow:
    label: str  # policy variant, e.g. "h2o" or "h2o (normalize=mean)"
    policy: str
    reference: bool  # the full-cache reference row
    cells: dict[str, TableCell | None]  # column label -> cell (None: no such run)


@dataclass
class Table:
    kind: str  # accuracy, delta, length, stops, efficiency, fidelity, category
    title: str
    model: str
    scope: str  # the dataset, or "category-<name>" for category means
    columns: list[str]
    fields: tuple[str, ...]
    rows: list[TableRow]
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """File-name-safe identifier, e.g. 'smollm2_135m__gsm8k__accuracy'."""
        return "__".join(slug(x) for x in (self.model, self.scope, self.kind))

    def row(self, label: str) -> TableRow:
        for r in self.rows:
            if r.label == label:
                return r
        raise KeyError(f"{label!r} not in table {self.name}: {[r.label for r in self.rows]}")

    def value(self, row: str, column: str, field_name: str) -> Any:
        """One number, e.g. table.value('h2o', 'B=128', 'accuracy'); None where no run exists."""
        cell = self.row(row).cells.get(column)
        return None if cell is None else cell.values.get(field_name)

    def header(self) -> list[str]:
        return ["policy"] + [f"{c}:{f}" for c in self.columns for f in self.fields]

    def data(self) -> list[list[Any]]:
        """Rows for CSV and W&B: the label, then each column's fields (None where undefined)."""
        out = []
        for r in self.rows:
            line: list[Any] = [r.label]
            for c in self.columns:
                cell = r.cells.get(c)
                for f in self.fields:
                    v = None if cell is None else cell.values.get(f)
                    line.append(None if isinstance(v, float) and math.isnan(v) else v)
            out.append(line)
        return out

    def markdown(self) -> str:
        lines = [
            "| policy | " + " | ".join(self.columns) + " |",
            "|---" * (len(self.columns) + 1) + "|",
        ]
        for r in self.rows:
            label = f"**{r.label}** (reference)" if r.reference else r.label
            texts = [NO_VALUE if r.cells.get(c) is None else r.cells[c].text for c in self.columns]
            lines.append("| " + " | ".join(_md_escape(t) for t in [label, *texts]) + " |")
        return "\n".join(lines)

    def write_csv(self, path: Path) -> Path:
        return write_rows_csv(path, self.header(), self.data())


def slug(text: str) -> str:
    """A model or dataset name made safe for file names ('org/Model 8B' -> 'org_Model_8B')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "_"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


# --------------------------------------------------------------------------------------------
# Number formatting.


def _ok(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def fmt(x: Any, spec: str) -> str:
    return format(x, spec) if _ok(x) else NO_VALUE


def fmt_p(p: float) -> str:
    if not _ok(p):
        return "p " + NO_VALUE
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def fmt_bytes(n: Any) -> str:
    if not _ok(n):
        return NO_VALUE
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


# --------------------------------------------------------------------------------------------
# Table kinds: what each shows and how a cell renders. `render(result, reference)` gets the
# cell's result and its dataset's reference result (None when the dataset has no full run).

Render = Callable[[CellResult, CellResult | None], TableCell | None]


@dataclass(frozen=True)
class Kind:
    key: str
    title: str
    fields: tuple[str, ...]
    render: Render
    note: str
    compares: bool = False  # the reference row shows "reference" instead of its own numbers


def _accuracy(r: CellResult, ref: CellResult | None) -> TableCell:
    m = r.metrics
    text = f"{fmt(m.accuracy, '.3f')} [{fmt(m.ci_lo, '.3f')}, {fmt(m.ci_hi, '.3f')}]"
    if m.n_errors:
        text += f" · {m.n_errors} err"
    if not r.cell.complete:
        text += f" (n={m.n_rows})"
    values = {
        "accuracy": m.accuracy,
        "ci_lo": m.ci_lo,
        "ci_hi": m.ci_hi,
        "n": m.n_rows,
        "n_problems": m.n_problems,
        "n_errors": m.n_errors,
        "complete": r.cell.complete,
    }
    return TableCell(values, text)


def _delta(r: CellResult, ref: CellResult | None) -> TableCell | None:
    p = r.paired
    if p is None:
        return None
    text = f"{fmt(p.delta, '+.3f')} (+{p.gains}/-{p.losses}, {fmt_p(p.p_value)})"
    values = {
        "delta": p.delta,
        "gains": p.gains,
        "losses": p.losses,
        "p_value": p.p_value,
        "n_pairs": p.n_pairs,
    }
    return TableCell(values, text)


def _length(r: CellResult, ref: CellResult | None) -> TableCell:
    mean = r.metrics.mean_output_tokens
    full = ref.metrics.mean_output_tokens if ref is not None else math.nan
    ratio = mean / full if _ok(full) and full > 0 and _ok(mean) else math.nan
    text = fmt(mean, ".0f") + (f" (×{ratio:.2f})" if _ok(ratio) else "")
    return TableCell({"mean_output_tokens": mean, "ratio_to_full": ratio}, text)


def _stops(r: CellResult, ref: CellResult | None) -> TableCell:
    m = r.metrics
    text = f"trunc {fmt(m.truncation_rate, '.1%')} · rep {fmt(m.repetition_rate, '.1%')}"
    values = {"truncation_rate": m.truncation_rate, "repetition_rate": m.repetition_rate}
    return TableCell(values, text)


def _efficiency(r: CellResult, ref: CellResult | None) -> TableCell:
    m = r.metrics
    text = f"{fmt(m.decode_tokens_per_s, '.1f')} tok/s · {fmt_bytes(m.kv_bytes_peak)}"
    values = {"decode_tokens_per_s": m.decode_tokens_per_s, "kv_bytes_peak": m.kv_bytes_peak}
    return TableCell(values, text)


def _fidelity(r: CellResult, ref: CellResult | None) -> TableCell | None:
    p = r.paired
    if p is None or not r.same_seed:
        return None
    text = f"{fmt(p.same_prediction, '.0%')} same · {fmt(p.mean_prefix_tokens, '.0f')} tok"
    values = {
        "same_prediction": p.same_prediction,
        "identical_output": p.identical_output,
        "mean_prefix_tokens": p.mean_prefix_tokens,
        "n_pairs": p.n_fidelity,
    }
    return TableCell(values, text)


KINDS: tuple[Kind, ...] = (
    Kind(
        "accuracy",
        "Accuracy (pass@1) with 95% interval",
        ("accuracy", "ci_lo", "ci_hi", "n", "n_problems", "n_errors", "complete"),
        _accuracy,
        "**Accuracy**: share of correct answers (pass@1; with several samples per problem, the "
        "mean over problems of each problem's share of correct samples). Error rows count as "
        "incorrect; `k err` gives their number (n_errors in the CSV). Interval: 95% "
        f"{CI_METHOD_TEXT[WILSON]} with one sample per problem, else a "
        f"{CI_METHOD_TEXT[BOOTSTRAP]}. `(n=…)` gives the rows of an incomplete cell.",
    ),
    Kind(
        "delta",
        "Change in accuracy against the full cache (paired)",
        ("delta", "gains", "losses", "p_value", "n_pairs"),
        _delta,
        "**Change vs full cache**: accuracy minus the full cache's on the same (id, sample_idx) "
        "pairs; `+g/-l` counts the discordant pairs (g: policy right where the full cache was "
        "wrong, l: the reverse); p: exact McNemar test, two-sided binomial on the discordant "
        "pairs (with several samples per problem the pairs are not independent: read p as a "
        "guide).",
        compares=True,
    ),
    Kind(
        "length",
        "Mean output tokens (× full cache)",
        ("mean_output_tokens", "ratio_to_full"),
        _length,
        "**Output length**: mean output tokens over rows without error; `×r` is the ratio to the "
        "full cache's mean on its own rows.",
    ),
    Kind(
        "stops",
        "Stop reasons: truncated at max_new_tokens · repetition loop",
        ("truncation_rate", "repetition_rate"),
        _stops,
        "**Stop reasons**: share of rows without error that stopped at `max_new_tokens` (trunc) "
        "or on a repetition loop (rep).",
    ),
    Kind(
        "efficiency",
        "Decode throughput · KV bytes at peak",
        ("decode_tokens_per_s", "kv_bytes_peak"),
        _efficiency,
        "**Cost**: decode throughput = Σ output tokens / Σ decode seconds over rows without "
        "error (depends on hardware and batch size: compare within one sweep); KV bytes at peak = "
        "maximum over rows.",
    ),
    Kind(
        "fidelity",
        "Fidelity to the full cache: same prediction · tokens before first divergence",
        ("same_prediction", "identical_output", "mean_prefix_tokens", "n_pairs"),
        _fidelity,
        "**Fidelity** (against a full-cache run of the same model, dataset and seed, on the same "
        "(id, sample_idx), pairs with an error row left out): share with the same prediction; mean "
        "number of output tokens before the first differing output id (the whole output when "
        "identical; `identical_output` in the CSV).",
        compares=True,
    ),
)

CATEGORY_NOTE = (
    "**Category means**: unweighted mean of the datasets' accuracies (macro average) over the "
    "study's categories ("
    + "; ".join(f"{name}: {', '.join(members)}" for name, members in CATEGORIES.items())
    + f"; anything else: {OTHER}); `(k/n)` when only k of the category's n datasets have that cell."
)
INCOMPLETE_NOTE = (
    f"{INCOMPLETE_MARK} marks a cell that is not complete (a shard failed, is running, was "
    "preempted or is missing, or rows are missing); its numbers cover the rows written so far. See *Attention*. "
    f"{NO_VALUE}: no run, or not defined (no full-cache reference)."
)


def _column_labels(layout: ModelLayout) -> list[str]:
    # A model with only full-cache runs still gets one column to show them in.
    return [c.label for c in layout.columns] or ["full cache"]


def _row_cells(
    kind: Kind,
    layout: ModelLayout,
    results: dict,
    dataset: str,
    variant: str,
    ref: CellResult | None,
) -> tuple[dict[str, TableCell | None], bool]:
    """Cells of one row; returns (cells by column label, is this the reference row)."""
    labels = _column_labels(layout)
    if layout.policy_of[variant] == FULL:
        cell = layout.cell(dataset, variant, None)
        is_ref = ref is not None and cell is ref.cell
        if cell is None:
            tc = None
        elif kind.compares and is_ref:
            tc = TableCell({}, "reference")
        else:
            tc = _mark(kind.render(results[cell], ref), results[cell])
        # The full cache has no budget: its one run is the reference in every budget column.
        return {label: tc for label in labels}, is_ref
    cells: dict[str, TableCell | None] = {}
    for col, label in zip(layout.columns, labels):
        cell = layout.cell(dataset, variant, col)
        if cell is None:
            cells[label] = None
        else:
            cells[label] = _mark(kind.render(results[cell], ref), results[cell])
    return cells, False


def _mark(tc: TableCell | None, r: CellResult) -> TableCell | None:
    if tc is not None and not r.cell.complete:
        tc.text += " " + INCOMPLETE_MARK
    return tc


def dataset_tables(layout: ModelLayout, results: dict, dataset: str) -> list[Table]:
    """The six tables of one (model, dataset)."""
    ref_cell = layout.reference.get(dataset)
    ref = results.get(ref_cell) if ref_cell is not None else None
    labels = _column_labels(layout)
    here = [results[c] for c in layout.cells() if c.dataset == dataset]
    present = {r.cell.variant for r in here}
    tables = []
    for kind in KINDS:
        rows = []
        for variant in layout.variants:
            # Full-cache variants appear only where they ran; policy variants always, so that a
            # policy missing from this dataset shows as a row of dashes instead of vanishing.
            if layout.policy_of[variant] == FULL and variant not in present:
                continue
            cells, is_ref = _row_cells(kind, layout, results, dataset, variant, ref)
            rows.append(TableRow(variant, layout.policy_of[variant], is_ref, cells))
        notes = []
        if kind.key == "accuracy":
            methods = sorted({r.metrics.ci_method for r in here})
            notes.append("95% intervals: " + "; ".join(CI_METHOD_TEXT[m] for m in methods) + ".")
        if ref is None and kind.compares:
            notes.append("No full-cache run for this dataset: nothing to compare against.")
        if kind.key == "fidelity" and ref is not None:
            if any(not r.same_seed for r in here):
                notes.append("Cells whose seed differs from the full-cache run's have no fidelity.")
        tables.append(
            Table(kind.key, kind.title, layout.model, dataset, labels, kind.fields, rows, notes)
        )
    return tables


def category_tables(layout: ModelLayout, results: dict) -> list[Table]:
    """Macro-averaged accuracy per study category (and over all datasets) for one model; none for a
    model run on one dataset, whose dataset tables already say it all."""
    if len(layout.datasets) < 2:
        return []
    groups: dict[str, list[str]] = {}
    for d in layout.datasets:
        groups.setdefault(category_of(d), []).append(d)
    order = [*CATEGORIES, OTHER]
    scopes = [(c, groups[c]) for c in order if c in groups]
    if len(layout.datasets) > 1 and len(scopes) > 1:
        scopes.append(("All", list(layout.datasets)))
    labels = _column_labels(layout)
    tables = []
    for name, datasets in scopes:
        rows = []
        for variant in layout.variants:
            is_full = layout.policy_of[variant] == FULL
            cells: dict[str, TableCell | None] = {}
            for col, label in zip([None] * len(labels) if is_full else layout.columns, labels):
                found = [layout.cell(d, variant, col) for d in datasets]
                found = [results[c] for c in found if c is not None]
                cells[label] = _category_cell(found, len(datasets))
            is_ref = is_full and all(
                layout.reference.get(d) is layout.cell(d, variant, None) for d in datasets
            )
            if is_full and all(v is None for v in cells.values()):
                continue
            rows.append(TableRow(variant, layout.policy_of[variant], is_ref, cells))
        title = f"{name} ({', '.join(datasets)}): mean accuracy"
        fields = ("accuracy", "n_datasets")
        tables.append(
            Table("category", title, layout.model, f"category-{name}", labels, fields, rows)
        )
    return tables


def _category_cell(found: list[CellResult], n_datasets: int) -> TableCell | None:
    accs = [r.metrics.accuracy for r in found if _ok(r.metrics.accuracy)]
    if not accs:
        return None
    mean = sum(accs) / len(accs)
    text = f"{mean:.3f}" + (f" ({len(accs)}/{n_datasets})" if len(accs) < n_datasets else "")
    if any(not r.cell.complete for r in found):
        text += " " + INCOMPLETE_MARK
    return TableCell({"accuracy": mean, "n_datasets": len(accs)}, text)


# --------------------------------------------------------------------------------------------
# One tidy row per cell, for scripts (cells.csv) and W&B.

CELL_COLUMNS = (
    "model",
    "dataset",
    "category",
    "policy",
    "variant",
    "budget_tokens",
    "budget_slack",
    "state",
    "complete",
    "shard_count",
    "missing_shards",
    "folders",
)
_METRIC_FIELDS = (
    "n_rows", "n_problems", "samples_per_problem", "n_errors", "accuracy", "ci_lo", "ci_hi",
    "ci_method", "mean_output_tokens", "truncation_rate", "repetition_rate",
    "decode_tokens_per_s", "kv_bytes_peak",
)  # fmt: skip
_PAIRED_FIELDS = (
    "n_pairs", "delta", "gains", "losses", "p_value", "n_fidelity", "same_prediction",
    "identical_output", "mean_prefix_tokens",
)  # fmt: skip


def cells_table(results: dict) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) with every cell's identity, state, metrics and comparison with the full
    cache (prefix vs_full_); the full cache appears once, with an empty budget."""
    header = [*CELL_COLUMNS, *_METRIC_FIELDS, *(f"vs_full_{f}" for f in _PAIRED_FIELDS)]
    rows = []
    order = sorted(
        results.values(),
        key=lambda r: (r.cell.model, r.cell.dataset, not r.cell.is_full, r.cell.variant,
                       r.cell.tokens or 0, r.cell.slack or 0),
    )  # fmt: skip
    for r in order:
        c = r.cell
        m = r.metrics.as_dict()
        p = r.paired.as_dict() if r.paired is not None else {}
        if not r.same_seed:
            for f in ("n_fidelity", "same_prediction", "identical_output", "mean_prefix_tokens"):
                p.pop(f, None)
        line = [
            c.model, c.dataset, category_of(c.dataset), c.policy, c.variant, c.tokens, c.slack,
            c.state, c.complete, c.shard_count, " ".join(map(str, c.missing_shards)),
            " ".join(str(j.path) for j in c.jobs.values()),
        ]  # fmt: skip
        line += [m[f] for f in _METRIC_FIELDS] + [p.get(f) for f in _PAIRED_FIELDS]
        rows.append([None if isinstance(v, float) and math.isnan(v) else v for v in line])
    return header, rows


def write_rows_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(["" if v is None else v for v in line] for line in rows)
    return path
