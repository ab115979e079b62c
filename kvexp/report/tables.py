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

from kvexp.stats import BOOTSTRAP, METHOD_TEXT, TWO_LEVEL, WILSON, Estimate, plain

from .config_keys import show
from .layout import CATEGORIES, OTHER, ModelLayout, category_of
from .metrics import CellResult

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
    kind: str  # accuracy, sampling, delta, length, stops, efficiency, fidelity, category
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
                    line.append(plain(v))
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


def fmt_interval(e: Estimate, spec: str) -> str:
    """'0.700 [0.397, 0.892]': an estimate with its interval (none shown when undefined)."""
    text = fmt(e.value, spec)
    return text + (f" [{fmt(e.lo, spec)}, {fmt(e.hi, spec)}]" if _ok(e.lo) else "")


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
    #: the fields for these results, when they depend on them (the k of pass@k); else `fields`
    fields_for: Callable[[list[CellResult]], tuple[str, ...]] | None = None
    #: whether the table is worth showing for these results (else left out)
    shown: Callable[[list[CellResult]], bool] = lambda results: True


def _accuracy(r: CellResult, ref: CellResult | None) -> TableCell:
    m = r.metrics
    text = fmt_interval(m.pass1, ".3f")
    if m.n_seeds > 1:
        text += f" · sd {fmt(m.pass1.seed_sd, '.3f')}"
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
        "n_seeds": m.n_seeds,
        "seed_sd": m.pass1.seed_sd,
        "complete": r.cell.complete,
    }
    return TableCell(values, text)


def _prompt_kept(r: CellResult, ref: CellResult | None) -> TableCell | None:
    m = r.metrics
    if not _ok(m.prompt_kept_share):
        return None
    text = f"{fmt(m.prompt_kept_share, '.2f')} · any {fmt(m.prompt_kept_any, '.2f')}"
    return TableCell({"prompt_kept_share": m.prompt_kept_share, "prompt_kept_any": m.prompt_kept_any}, text)


def _pass_ks(results: list[CellResult]) -> list[int]:
    return sorted({k for r in results for k in r.metrics.pass_k})


def _sampling_fields(results: list[CellResult]) -> tuple[str, ...]:
    return tuple(
        f"{name}@{k}{end}" for k in _pass_ks(results) for name in ("pass", "maj") for end in ("", "_lo", "_hi")
    )


def _sampling(r: CellResult, ref: CellResult | None) -> TableCell:
    m = r.metrics
    values: dict[str, Any] = {}
    parts = []
    for k in m.pass_k:
        for name, est in (("pass", m.pass_at[k]), ("maj", m.maj_at[k])):
            values.update({f"{name}@{k}": est.value, f"{name}@{k}_lo": est.lo, f"{name}@{k}_hi": est.hi})
            if name == "maj" and k == 1:
                continue  # maj@1 is pass@1 unless a sample has no answer: not worth a second number
            parts.append(f"{name}@{k} {fmt_interval(est, '.2f')}")
    return TableCell(values, " · ".join(parts))


def _delta(r: CellResult, ref: CellResult | None) -> TableCell | None:
    p = r.paired
    if p is None:
        return None
    text = f"{fmt_interval(p.delta, '+.3f')} (+{p.gains}/-{p.losses}, {fmt_p(p.p_value)})"
    values = {
        "delta": p.delta.value,
        "delta_lo": p.delta.lo,
        "delta_hi": p.delta.hi,
        "gains": p.gains,
        "losses": p.losses,
        "p_value": p.p_value,
        "n_pairs": p.n_pairs,
    }
    return TableCell(values, text)


def _length(r: CellResult, ref: CellResult | None) -> TableCell:
    mean = r.metrics.mean_output_tokens
    values: dict[str, Any] = {"mean_output_tokens": mean}
    text = fmt(mean, ".0f")
    if r.paired is not None:
        ratio, median = r.paired.length_ratio, r.paired.length_ratio_median
        values.update(ratio_to_full=ratio.value, ratio_lo=ratio.lo, ratio_hi=ratio.hi)
        values.update(ratio_median=median.value, ratio_median_lo=median.lo, ratio_median_hi=median.hi)
        if _ok(ratio.value):
            text += f" · ×{fmt_interval(ratio, '.2f')}, median ×{fmt(median.value, '.2f')}"
    elif ref is not None and r is ref:
        values["ratio_to_full"] = 1.0
    return TableCell(values, text)


def _stops(r: CellResult, ref: CellResult | None) -> TableCell:
    m = r.metrics
    text = (
        f"trunc {fmt(m.truncation_rate, '.1%')} · no answer {fmt(m.unextracted_rate, '.1%')} · "
        f"rep {fmt(m.repetition_rate, '.1%')}"
    )
    values = {
        "truncation_rate": m.truncation_rate,
        "unextracted_rate": m.unextracted_rate,
        "repetition_rate": m.repetition_rate,
    }
    return TableCell(values, text)


def _efficiency(r: CellResult, ref: CellResult | None) -> TableCell:
    m = r.metrics
    text = f"{fmt(m.decode_tokens_per_s, '.1f')} tok/s · {fmt_bytes(m.kv_bytes_peak)}"
    values = {"decode_tokens_per_s": m.decode_tokens_per_s, "kv_bytes_peak": m.kv_bytes_peak}
    return TableCell(values, text)


def _fidelity(r: CellResult, ref: CellResult | None) -> TableCell | None:
    p = r.paired
    if p is None:
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
        "mean over problems of each problem's share of correct samples; with several seeds, the "
        "mean over seeds, `sd` the standard deviation between seeds, each seed's value in "
        "seeds.csv). Error rows count as incorrect; `k err` gives their number (n_errors in the "
        f"CSV). Interval: 95% {METHOD_TEXT[WILSON]} with one seed and one sample per problem, "
        f"else a {METHOD_TEXT[BOOTSTRAP]}, or with several seeds a {METHOD_TEXT[TWO_LEVEL]} "
        "(a problem drawn is drawn for every seed). `(n=…)` gives the rows of an incomplete cell.",
    ),
    Kind(
        "prompt",
        "Prompt kept at the end of generation: share per head · in any head",
        ("prompt_kept_share", "prompt_kept_any"),
        _prompt_kept,
        "**Prompt kept** (read beside accuracy): when a row finishes, the share of its (prompt token, "
        "layer, KV head) entries still resident, then `any`: the share of its prompt tokens still "
        "resident in at least one head of one layer; means over rows without error (1.00 for the full "
        "cache).",
        shown=lambda results: any(_ok(r.metrics.prompt_kept_share) for r in results),
    ),
    Kind(
        "sampling",
        "Several samples per problem: pass@k and majority vote maj@k, 95% interval",
        (),
        _sampling,
        "**pass@k / maj@k** (with several samples per problem): pass@k is the unbiased estimate "
        "(Chen et al., 2021) of the chance that k samples hold a correct one, 1 - C(n-c, k) / C(n, k) "
        "for c correct of n, averaged over problems (and seeds); maj@k scores the answer most of "
        "the first k samples give (samples without an answer do not vote; a tie between t answers "
        "scores the share of them that are correct). Intervals as for accuracy, by bootstrap. The "
        "k are `metrics.pass_k` (default 1, 2, 4, ... up to the samples per problem).",
        fields_for=_sampling_fields,
        shown=lambda results: any(r.metrics.samples_per_problem > 1 for r in results),
    ),
    Kind(
        "delta",
        "Change in accuracy against the full cache (paired)",
        ("delta", "gains", "losses", "p_value", "n_pairs"),
        _delta,
        "**Change vs full cache**: accuracy minus the full cache's on the same (seed, id, "
        "sample_idx): each seed's run against the full cache's run of that seed, seeds without "
        "one left out (see *Attention*); 95% interval by bootstrap over problems (and seeds); "
        "`+g/-l` counts the discordant pairs (g: policy right where the full cache was wrong, l: "
        "the reverse); p: exact McNemar test, two-sided binomial on the discordant pairs (with "
        "several samples or seeds per problem the pairs are not independent: read p as a guide).",
        compares=True,
    ),
    Kind(
        "length",
        "Mean output tokens · paired length ratio to the full cache",
        (
            "mean_output_tokens",
            "ratio_to_full",
            "ratio_lo",
            "ratio_hi",
            "ratio_median",
            "ratio_median_lo",
            "ratio_median_hi",
        ),  # fmt: skip
        _length,
        "**Output length**: mean output tokens over rows without error; `×r [lo, hi]` the paired "
        "ratio to the full cache: each output's tokens over the full cache's output for the same "
        "(seed, id, sample_idx), averaged per problem, then the mean over problems (and seeds) "
        "with a 95% bootstrap interval; `median` the median of the per-problem ratios (interval "
        "in the CSV). Read it with the stop reasons: a longer output that hit `max_new_tokens` is "
        "truncated, not finished.",
    ),
    Kind(
        "stops",
        "Stop reasons: truncated at max_new_tokens · no answer extracted · repetition loop",
        ("truncation_rate", "unextracted_rate", "repetition_rate"),
        _stops,
        "**Stop reasons**: share of rows without error that stopped at `max_new_tokens` (trunc), "
        "whose answer could not be extracted (no answer: the grader found none, e.g. a truncated "
        "or derailed reply), or that stopped on a repetition loop (rep).",
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
        "**Fidelity** (against the full-cache run of the same model, dataset and seed, on the same "
        "(id, sample_idx), pooled over seeds, pairs with an error row left out): share with the same prediction; mean "
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
    if layout.is_full(variant):
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
        if not kind.shown(here):
            continue
        rows = []
        for variant in layout.variants:
            # Full-cache variants appear only where they ran; policy variants always, so that a
            # policy missing from this dataset shows as a row of dashes instead of vanishing.
            if layout.is_full(variant) and variant not in present:
                continue
            cells, is_ref = _row_cells(kind, layout, results, dataset, variant, ref)
            rows.append(TableRow(variant, layout.policy_of[variant], is_ref, cells))
        notes = []
        if kind.key == "accuracy":
            methods = sorted({r.metrics.ci_method for r in here})
            notes.append("95% intervals: " + "; ".join(METHOD_TEXT[m] for m in methods) + ".")
        if ref is None and kind.compares:
            notes.append("No full-cache run for this dataset: nothing to compare against.")
        if kind.compares:
            unpaired = sorted({show(s) for r in here if r.paired is not None for s in r.paired.unpaired_seeds})
            if unpaired and ref is not None:
                notes.append(f"Seed {', '.join(unpaired)} has no full-cache run: left out of the comparison.")
        fields = kind.fields_for(here) if kind.fields_for is not None else kind.fields
        tables.append(Table(kind.key, kind.title, layout.model, dataset, labels, fields, rows, notes))
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
            is_full = layout.is_full(variant)
            cells: dict[str, TableCell | None] = {}
            for col, label in zip([None] * len(labels) if is_full else layout.columns, labels):
                found = [layout.cell(d, variant, col) for d in datasets]
                found = [results[c] for c in found if c is not None]
                cells[label] = _category_cell(found, len(datasets))
            is_ref = is_full and all(layout.reference.get(d) is layout.cell(d, variant, None) for d in datasets)
            if is_full and all(v is None for v in cells.values()):
                continue
            rows.append(TableRow(variant, layout.policy_of[variant], is_ref, cells))
        title = f"{name} ({', '.join(datasets)}): mean accuracy"
        fields = ("accuracy", "n_datasets")
        tables.append(Table("category", title, layout.model, f"category-{name}", labels, fields, rows))
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
    "n_rows", "n_problems", "samples_per_problem", "n_errors", "n_seeds", "accuracy", "ci_lo",
    "ci_hi", "ci_method", "mean_output_tokens", "truncation_rate", "unextracted_rate",
    "repetition_rate", "decode_tokens_per_s", "kv_bytes_peak", "prompt_kept_share", "prompt_kept_any",
)  # fmt: skip
_PAIRED_FIELDS = (
    "n_pairs", "gains", "losses", "p_value", "n_fidelity", "same_prediction", "identical_output",
    "mean_prefix_tokens", "n_length_pairs",
)  # fmt: skip
#: Estimates of the comparison with the full cache: value, lo, hi each.
_PAIRED_ESTIMATES = ("delta", "length_ratio", "length_ratio_median")


def _triple(e: Estimate | None) -> list[Any]:
    """value, lo, hi of an estimate (None for each when there is none)."""
    return [None] * 3 if e is None else [e.value, e.lo, e.hi]


def _order(results: dict) -> list[CellResult]:
    return sorted(
        results.values(),
        key=lambda r: (r.cell.model, r.cell.dataset, not r.cell.is_full, r.cell.variant,
                       r.cell.tokens or 0, r.cell.slack or 0),
    )  # fmt: skip


def _identity_columns(r: CellResult) -> list[Any]:
    c = r.cell
    return [c.model, c.dataset, category_of(c.dataset), c.policy, c.variant, c.tokens, c.slack]


def _clean(line: list[Any]) -> list[Any]:
    return [plain(v) for v in line]


def cells_table(results: dict) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) with every cell's identity, state, metrics, pass@k and maj@k, the spread of
    its accuracy between seeds, and its comparison with the full cache (prefix vs_full_); the full
    cache appears once, with an empty budget."""
    ks = _pass_ks(list(results.values()))
    header = [
        *CELL_COLUMNS, "seeds", "accuracy_seed_sd", "accuracy_by_seed", *_METRIC_FIELDS,
        *(f"{name}@{k}{end}" for k in ks for name in ("pass", "maj") for end in ("", "_lo", "_hi")),
        *(f"vs_full_{f}" for f in _PAIRED_FIELDS),
        *(f"vs_full_{name}{end}" for name in _PAIRED_ESTIMATES for end in ("", "_lo", "_hi")),
        "vs_full_unpaired_seeds",
    ]  # fmt: skip
    rows = []
    for r in _order(results):
        c, m, p = r.cell, r.metrics, r.paired
        line = [
            *_identity_columns(r), c.state, c.complete, c.shard_count,
            " ".join(map(str, c.missing_shards)), " ".join(str(j.path) for j in c.jobs),
            " ".join(map(show, m.seeds)), m.pass1.seed_sd,
            " ".join(f"{show(s)}:{v:.6g}" for s, v in zip(m.seeds, m.pass1.per_seed)),
        ]  # fmt: skip
        line += [getattr(m, f) for f in _METRIC_FIELDS]
        for k in ks:
            line += _triple(m.pass_at.get(k)) + _triple(m.maj_at.get(k))
        line += [None if p is None else getattr(p, f) for f in _PAIRED_FIELDS]
        for name in _PAIRED_ESTIMATES:
            line += _triple(None if p is None else getattr(p, name))
        line.append(None if p is None else " ".join(map(show, p.unpaired_seeds)))
        rows.append(_clean(line))
    return header, rows


def seeds_table(results: dict) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): one row per (cell, seed) with that seed's accuracy, pass@k and maj@k, and
    its change and length ratio against the full cache's run of the same seed."""
    ks = _pass_ks(list(results.values()))
    header = [
        "model", "dataset", "category", "policy", "variant", "budget_tokens", "budget_slack",
        "seed", "state", "complete", "n_rows", "accuracy",
        *(f"{name}@{k}" for k in ks for name in ("pass", "maj")),
        "vs_full_delta", "vs_full_length_ratio", "vs_full_length_ratio_median",
    ]  # fmt: skip
    rows = []
    for r in _order(results):
        m, p = r.metrics, r.paired
        paired_at = {s: i for i, s in enumerate(p.seeds)} if p is not None else {}
        for i, seed in enumerate(m.seeds):
            run = r.cell.runs[seed]
            line = [*_identity_columns(r), seed, run.state, run.complete, len(run.rows)]
            line.append(m.pass1.per_seed[i])
            for k in ks:
                for table in (m.pass_at, m.maj_at):
                    line.append(table[k].per_seed[i] if k in table else None)
            j = paired_at.get(seed)
            for name in _PAIRED_ESTIMATES:
                line.append(None if j is None else getattr(p, name).per_seed[j])
            rows.append(_clean(line))
    return header, rows


def write_rows_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(["" if v is None else v for v in line] for line in rows)
    return path
