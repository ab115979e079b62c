"""Assembly of report.md: what needs attention first, then how to read the tables, the tables per
model and dataset, and the plots."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path

from kvexp.pipeline.folder import FAILED, PREEMPTED, RUNNING
from kvexp.stats.summary import seed_order

from .cells import Cell, state_counts
from .config_keys import REPLICATE_KEY, show
from .layout import ModelLayout
from .loading import UNKNOWN, Issue, Job
from .metrics import CellResult
from .tables import CATEGORY_NOTE, INCOMPLETE_NOTE, KINDS, Table, fmt, fmt_interval

#: Attention list order: what lost results first, bookkeeping last.
ISSUE_ORDER = (
    FAILED, PREEMPTED, RUNNING, UNKNOWN, "missing shards", "missing reference",
    "missing cells", "missing seeds", "unreadable", "short", "ignored folder", "bad lines", "duplicates",
)  # fmt: skip
_MAX_DETAIL = 300


def _issue_rank(issue: Issue) -> tuple:
    kind = ISSUE_ORDER.index(issue.kind) if issue.kind in ISSUE_ORDER else len(ISSUE_ORDER)
    return (kind, issue.where)


def _short_path(path: Path, dirs: Sequence[Path]) -> str:
    for d in dirs:
        try:
            return str(path.relative_to(Path(d).resolve()))
        except ValueError:
            continue
    return str(path)


def _one_line(text: str) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def attention_section(issues: Sequence[Issue], dirs: Sequence[Path]) -> list[str]:
    lines = ["## Attention", ""]
    if not issues:
        return lines + ["Every cell is complete and the grid has no holes.", ""]
    lines += ["| what | cell | detail | folder |", "|---|---|---|---|"]
    for i in sorted(issues, key=_issue_rank):
        folders = ", ".join(f"`{_short_path(p, dirs)}`" for p in i.paths[:3])
        if len(i.paths) > 3:
            folders += f" (+{len(i.paths) - 3})"
        lines.append(f"| {i.kind} | {_one_line(i.where)} | {_one_line(i.detail)} | {folders} |")
    return lines + [""]


def shared_setup(jobs: Sequence[Job]) -> str:
    """Generation settings common to every job, e.g. 'generation.max_new_tokens=2048 · seed=0'."""
    keys = sorted(
        k
        for k in set().union(*(j.config for j in jobs))
        if k.startswith("generation.") or k in (REPLICATE_KEY, "dataset.limit")
    )
    keys = [k for k in keys if k != "generation.batch_size"]  # bookkeeping, see cells.IGNORED_KEYS
    parts = []
    for k in keys:
        values = {show(j.config.get(k)) for j in jobs}
        if len(values) == 1:
            parts.append(f"{k}={values.pop()}")
        elif k == REPLICATE_KEY:  # seeds repeat every cell: the tables pool them
            parts.append(f"{k}=" + ",".join(map(show, seed_order({j.config.get(k) for j in jobs}))))
        else:
            parts.append(f"{k}=(mixed)")
    return " · ".join(parts)


def _dataset_header(layout: ModelLayout, results: dict[Cell, CellResult], dataset: str) -> str:
    cells = [c for c in layout.cells() if c.dataset == dataset]
    problems = max((results[c].metrics.n_problems for c in cells), default=0)
    samples = max((results[c].metrics.samples_per_problem for c in cells), default=0)
    text = f"{problems} problems · {samples} sample{'s' if samples != 1 else ''} per problem"
    seeds = seed_order({s for c in cells for s in c.runs})
    if len(seeds) > 1:
        text += f" · {len(seeds)} seeds ({', '.join(map(show, seeds))}), pooled in every cell"
    ref = layout.reference.get(dataset)
    if ref is not None:
        m = results[ref].metrics
        text += (
            f" · full cache: {fmt_interval(m.pass1, '.3f')},"
            f" {fmt(m.mean_output_tokens, '.0f')} output tokens on average"
        )
    else:
        text += " · **no full-cache run**"
    return text


def render_markdown(
    *,
    dirs: Sequence[Path],
    jobs: Sequence[Job],
    cells: Sequence[Cell],
    layouts: Sequence[ModelLayout],
    results: dict[Cell, CellResult],
    tables: Sequence[Table],
    issues: Sequence[Issue],
    notes: Sequence[str],
    plots: dict[str, list[Path]],
    out: Path,
) -> str:
    """The whole report.md text."""
    counts = state_counts(cells)
    ordered = sorted(counts.items(), key=lambda kv: kv[0] != "complete")
    state_text = ", ".join(f"{n} {k}" for k, n in ordered)
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [
        "# kvexp sweep report",
        "",
        f"Generated {now} from " + ", ".join(f"`{d}`" for d in dirs) + ".",
        f"{len(jobs)} job folders, {len(cells)} cells ({state_text}).",
        "",
        f"Shared setup: {shared_setup(jobs)}",
        "",
    ]
    lines += attention_section(issues, dirs)
    lines += ["## How to read the tables", ""]
    shown = {t.kind for t in tables}
    lines += [f"- {k.note}" for k in KINDS if k.key in shown]
    lines += [f"- {CATEGORY_NOTE}", f"- {INCOMPLETE_NOTE}"]
    lines += [f"- {n}" for n in notes]
    lines += [f"- {n}" for layout in layouts for n in layout.notes]
    lines.append("")

    by_scope: dict[tuple[str, str], list[Table]] = {}
    for t in tables:
        by_scope.setdefault((t.model, t.scope), []).append(t)
    for layout in layouts:
        lines += [f"## Model: {layout.model}", ""]
        categories = [
            t for (m, scope), ts in by_scope.items() if m == layout.model and scope.startswith("category-") for t in ts
        ]
        if categories:
            lines += ["### Category means", ""]
            for t in categories:
                lines += [f"#### {t.title}", "", t.markdown(), ""]
        for dataset in layout.datasets:
            header = _dataset_header(layout, results, dataset)
            lines += [f"### {layout.model} / {dataset}", "", header, ""]
            for t in by_scope.get((layout.model, dataset), []):
                lines += [f"#### {t.title}", "", t.markdown(), ""]
                lines += [f"*{n}*" for n in t.notes] + ([""] if t.notes else [])
        model_plots = plots.get(layout.model, [])
        if model_plots:
            lines += [f"### Plots: {layout.model}", ""]
            for p in model_plots:
                lines += [f"![{p.stem}]({p.relative_to(out).as_posix()})", ""]
    return "\n".join(lines).rstrip() + "\n"
