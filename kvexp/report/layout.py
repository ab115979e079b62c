"""Layout of a model's cells: one row per policy variant, one column per (budget, slack), with the
full cache as the reference row of each dataset; and the order of datasets and policies."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from kvexp.data.registry import CATEGORIES as CATEGORY_OF
from kvexp.data.registry import REPORT_ORDER
from kvexp.policies import POLICY_NAMES
from kvexp.stats.summary import seed_order

from .cells import Cell
from .config_keys import ABSENT, canon, show
from .loading import Issue

#: Categories of the data registry (kvexp.data.registry, the one place a dataset's category is
#: written: the study's and the organism's tasks), in its order, which also orders datasets in the
#: report. Datasets outside it (new ones) are averaged under "Other" rather than dropped.
CATEGORIES: dict[str, tuple[str, ...]] = {
    category: tuple(d for d in REPORT_ORDER if CATEGORY_OF[d] == category)
    for category in dict.fromkeys(CATEGORY_OF.values())
}
OTHER = "Other"


def category_of(dataset: str) -> str:
    return CATEGORY_OF.get(dataset, OTHER)


def _dataset_rank(dataset: str) -> tuple:
    """Registry order (grouped by category), then datasets outside it by name."""
    return (REPORT_ORDER.index(dataset), "") if dataset in REPORT_ORDER else (len(REPORT_ORDER), dataset)


@dataclass(frozen=True)
class Column:
    """A budget column: tokens and slack (slack shown only when a model's cells use several)."""

    tokens: int | None
    slack: int | None
    label: str


@dataclass
class ModelLayout:
    """Everything of one model: its datasets, row variants, budget columns and cells."""

    model: str
    datasets: list[str]
    variants: list[str]  # row labels, full-cache variants first
    columns: list[Column]
    grid: dict[tuple[str, str, Column], Cell]  # (dataset, variant, column) -> cell (non-full)
    full: dict[tuple[str, str], Cell]  # (dataset, variant) -> full-cache cell
    reference: dict[str, Cell]  # dataset -> the full-cache cell used as reference
    policy_of: dict[str, str]  # variant -> policy name
    full_variants: frozenset[str]  # the variants of full-cache cells (no budget)
    notes: list[str] = field(default_factory=list)
    missing: list[Issue] = field(default_factory=list)

    def cell(self, dataset: str, variant: str, column: Column | None) -> Cell | None:
        if column is None:
            return self.full.get((dataset, variant))
        return self.grid.get((dataset, variant, column))

    def cells(self) -> list[Cell]:
        return list(self.full.values()) + list(self.grid.values())

    def is_full(self, variant: str) -> bool:
        return variant in self.full_variants


def _policy_rank(policy: str) -> tuple:
    # the registry's order (the reference first, then the README's policy table), then unregistered by name
    if policy in POLICY_NAMES:
        return (POLICY_NAMES.index(policy), "")
    return (len(POLICY_NAMES), policy)


def _column_of(cell: Cell, slack_varies: bool) -> Column:
    label = f"B={cell.tokens}"  # only cells with a budget have a column
    if slack_varies:
        label += f" S={cell.slack if cell.slack is not None else '?'}"
    return Column(cell.tokens, cell.slack, label)


def _split_params(cells: list[Cell], slot) -> tuple[list[str], list[str]]:
    """Which parameters tell rows of one policy apart: (splitting, following the budget).

    A parameter splits rows when two cells in the same (dataset, column) slot differ in it, e.g.
    h2o normalize=sum vs mean. A parameter that only changes from column to column (a window swept
    as B/2 together with the budget) follows the budget and must not split rows, or every budget
    would become its own row.
    """
    keys = sorted({k for c in cells for k, _ in c.params})
    splitting, following = [], []
    for key in keys:
        per_slot: dict[Any, set[str]] = defaultdict(set)
        for c in cells:
            per_slot[slot(c)].add(canon(dict(c.params).get(key, ABSENT)))
        if any(len(v) > 1 for v in per_slot.values()):
            splitting.append(key)
        elif len(set().union(*per_slot.values())) > 1:
            following.append(key)
    return splitting, following


def _variant_label(cell: Cell, splitting: list[str]) -> str:
    if not splitting:
        return cell.policy
    params = dict(cell.params)
    shown = ", ".join(f"{k.split('.', 1)[-1]}={show(params.get(k, ABSENT))}" for k in splitting)
    return f"{cell.policy} ({shown})"


def layout_model(model: str, cells: list[Cell]) -> ModelLayout:
    """Arrange one model's cells into rows and columns and find the holes in the grid."""
    budgeted = [c for c in cells if not c.is_full]
    slack_varies = len({c.slack for c in budgeted}) > 1
    notes: list[str] = []
    by_policy: dict[str, list[Cell]] = defaultdict(list)
    for c in cells:
        by_policy[c.policy].append(c)
    variant_keys: dict[str, tuple] = {}
    policy_of: dict[str, str] = {}
    for policy, group in by_policy.items():
        splitting, following = _split_params(group, slot=lambda c: (c.dataset, c.tokens, c.slack))
        for key in following:
            values = sorted(
                {(c.tokens, show(dict(c.params).get(key, ABSENT))) for c in group},
                key=lambda tv: (tv[0] is None, tv[0] or 0),
            )
            shown = ", ".join(f"B={t}: {v}" for t, v in values)
            notes.append(f"{policy}: {key} follows the budget ({shown})")
        for c in group:
            c.variant = _variant_label(c, splitting)
            policy_of[c.variant] = policy
            variant_keys[c.variant] = (_policy_rank(policy), c.variant)
    variants = sorted(variant_keys, key=variant_keys.get)
    datasets = sorted({c.dataset for c in cells}, key=_dataset_rank)
    columns = sorted(
        {_column_of(c, slack_varies) for c in budgeted},
        key=lambda col: (col.tokens is None, col.tokens or 0, col.slack or 0),
    )
    grid, full = {}, {}
    for c in cells:
        if c.is_full:
            full[(c.dataset, c.variant)] = c
        else:
            grid[(c.dataset, c.variant, _column_of(c, slack_varies))] = c
    reference: dict[str, Cell] = {}
    missing: list[Issue] = []
    full_variants = [v for v in variants if v in {c.variant for c in cells if c.is_full}]
    for d in datasets:
        refs = [full[(d, v)] for v in full_variants if (d, v) in full]
        if refs:
            reference[d] = refs[0]
            if len(refs) > 1:
                notes.append(f"{d}: several full-cache cells; reference is {refs[0].variant}")
        else:
            detail = "no full-cache cell: no deltas or fidelity"
            missing.append(Issue("missing reference", f"{model} / {d}", detail))
        for v in variants:
            if v in full_variants:
                continue
            holes = [col.label for col in columns if (d, v, col) not in grid]
            if holes:
                detail = "no job folder for " + ", ".join(holes)
                missing.append(Issue("missing cells", f"{model} / {d} / {v}", detail))
        missing += _missing_seeds([c for c in cells if c.dataset == d])
    return ModelLayout(
        model,
        datasets,
        variants,
        columns,
        grid,
        full,
        reference,
        policy_of,
        frozenset(full_variants),
        notes,
        missing,
    )


def _missing_seeds(cells: list[Cell]) -> list[Issue]:
    """Cells of one (model, dataset) that lack a seed some other cell has: their means cover fewer
    seeds, and a seed the full cache lacks has nothing to be compared with."""
    every = seed_order({s for c in cells for s in c.runs})
    issues = []
    for c in cells:
        absent = [s for s in every if s not in c.runs]
        if absent:
            detail = f"no run for seed {', '.join(map(show, absent))} (others have {', '.join(map(show, every))})" + (
                "; policies' runs of that seed have no full cache to compare with" if c.is_full else ""
            )
            issues.append(Issue("missing seeds", c.label, detail, [j.path for j in c.jobs]))
    return issues


def layout_models(cells: list[Cell]) -> list[ModelLayout]:
    """One layout per model, plus a note when models cover different datasets."""
    by_model: dict[str, list[Cell]] = defaultdict(list)
    for c in cells:
        by_model[c.model].append(c)
    layouts = [layout_model(m, by_model[m]) for m in sorted(by_model)]
    all_datasets = set().union(*(set(layout.datasets) for layout in layouts)) if layouts else set()
    for layout in layouts:
        absent = sorted(all_datasets - set(layout.datasets), key=_dataset_rank)
        if absent:
            detail = "no cells for datasets " + ", ".join(absent)
            layout.missing.append(Issue("missing cells", layout.model, detail))
    return layouts
