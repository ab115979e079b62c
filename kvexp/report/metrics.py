"""Metrics of a cell, recomputed from its merged sample rows, and comparisons with the full cache.

metrics.json files are never averaged: shards would be weighted wrongly and intervals cannot be
combined, so everything here starts from rows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from .cells import Cell, ModelLayout
from .loading import Row
from .stats import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    bootstrap_mean_interval,
    common_prefix_length,
    mcnemar_exact,
    wilson_interval,
)

WILSON = "wilson"
BOOTSTRAP = "bootstrap"
CI_METHOD_TEXT = {
    WILSON: "Wilson score interval",
    BOOTSTRAP: (
        f"percentile bootstrap over problems ({BOOTSTRAP_RESAMPLES:,} resamples, seed "
        f"{BOOTSTRAP_SEED})"
    ),
}

TRUNCATED = "max_new_tokens"
REPETITION = "repetition"
NAN = math.nan


@dataclass
class CellMetrics:
    """One cell's numbers. Rates over generations exclude error rows; accuracy counts them wrong."""

    n_rows: int
    n_problems: int
    samples_per_problem: int  # most samples seen for one problem
    n_errors: int
    accuracy: float  # pass@1: mean over problems of the share of correct samples
    ci_lo: float
    ci_hi: float
    ci_method: str  # WILSON or BOOTSTRAP
    mean_output_tokens: float
    truncation_rate: float
    repetition_rate: float
    decode_tokens_per_s: float
    kv_bytes_peak: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class PairedMetrics:
    """A cell against the full cache of the same model and dataset, on shared (id, sample_idx)."""

    n_pairs: int
    accuracy_policy: float  # on the paired rows only
    accuracy_full: float
    delta: float  # accuracy_policy - accuracy_full
    gains: int  # policy correct, full cache wrong
    losses: int  # full cache correct, policy wrong
    p_value: float  # exact McNemar on gains vs losses
    n_fidelity: int  # pairs without an error row on either side
    same_prediction: float  # share of those with equal predictions
    identical_output: float  # share of those with identical output_ids
    mean_prefix_tokens: float  # mean output tokens before the first differing output id

    def as_dict(self) -> dict:
        return asdict(self)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else NAN


def cell_metrics(rows: Sequence[Row], num_samples: int | None = None) -> CellMetrics:
    """Accuracy with its interval, lengths, stop reasons and cost of one cell.

    With one sample per problem the accuracy is a proportion and gets a Wilson interval. With
    several (`num_samples` > 1, or more than one row for some problem) it is pass@1 averaged per
    problem, and its interval comes from a problem-level bootstrap, because samples of one problem
    are not independent.
    """
    per_problem: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        per_problem[r.id].append(r.correct)
    most = max((len(v) for v in per_problem.values()), default=0)
    several = (num_samples if isinstance(num_samples, int) else 1) > 1 or most > 1
    if several:
        scores = [sum(v) / len(v) for v in per_problem.values()]
        accuracy = _mean(scores)
        lo, hi = bootstrap_mean_interval(scores)
    else:
        k = sum(r.correct for r in rows)
        accuracy = k / len(rows) if rows else NAN
        lo, hi = wilson_interval(k, len(rows))

    ok = [r for r in rows if not r.is_error]
    lengths = [r.n_output_tokens for r in ok if r.n_output_tokens is not None]
    timed = [r for r in ok if r.decode_s is not None and r.n_output_tokens is not None]
    decode_s = sum(r.decode_s for r in timed)
    decoded = sum(r.n_output_tokens for r in timed)
    kv = [r.kv_bytes_peak for r in rows if r.kv_bytes_peak is not None]
    return CellMetrics(
        n_rows=len(rows),
        n_problems=len(per_problem),
        samples_per_problem=most,
        n_errors=len(rows) - len(ok),
        accuracy=accuracy,
        ci_lo=lo,
        ci_hi=hi,
        ci_method=BOOTSTRAP if several else WILSON,
        mean_output_tokens=_mean(lengths),
        truncation_rate=_mean([r.stop_reason == TRUNCATED for r in ok]),
        repetition_rate=_mean([r.stop_reason == REPETITION for r in ok]),
        # Totals, not a mean of per-row speeds: long outputs dominate the time, so they must
        # dominate the rate as well.
        decode_tokens_per_s=decoded / decode_s if decode_s > 0 else NAN,
        kv_bytes_peak=max(kv) if kv else NAN,
    )


def paired_metrics(rows: Sequence[Row], full_rows: Sequence[Row]) -> PairedMetrics:
    """Change against the full cache on the same problems and samples.

    Pairs are matched by (id, sample_idx), so a partial cell is compared on what it has, not
    against the full cache's other problems. Fidelity ignores pairs where either side failed:
    it measures how far generations drift, errors are counted in the accuracy table.
    """
    full_by_key = {r.key: r for r in full_rows}
    pairs = [(r, full_by_key[r.key]) for r in rows if r.key in full_by_key]
    gains = sum(p.correct and not f.correct for p, f in pairs)
    losses = sum(f.correct and not p.correct for p, f in pairs)
    acc_p = _mean([p.correct for p, _ in pairs])
    acc_f = _mean([f.correct for _, f in pairs])
    clean = [(p, f) for p, f in pairs if not p.is_error and not f.is_error]
    prefixes = [common_prefix_length(p.output_ids or [], f.output_ids or []) for p, f in clean]
    return PairedMetrics(
        n_pairs=len(pairs),
        accuracy_policy=acc_p,
        accuracy_full=acc_f,
        # Equal to acc_p - acc_f, but exact: concordant pairs cancel.
        delta=(gains - losses) / len(pairs) if pairs else NAN,
        gains=gains,
        losses=losses,
        p_value=mcnemar_exact(losses, gains),
        n_fidelity=len(clean),
        same_prediction=_mean([p.prediction == f.prediction for p, f in clean]),
        identical_output=_mean([(p.output_ids or []) == (f.output_ids or []) for p, f in clean]),
        mean_prefix_tokens=_mean(prefixes),
    )


@dataclass
class CellResult:
    """A cell, its metrics and (unless it is a full-cache cell) its comparison with the full
    cache."""

    cell: Cell
    metrics: CellMetrics
    paired: PairedMetrics | None  # None for full-cache cells and datasets without a reference
    same_seed: bool  # fidelity is only meaningful against a full run with the same seed


def evaluate(layout: ModelLayout) -> dict[Cell, CellResult]:
    """Metrics of every cell of a model, and the paired comparison with its dataset's reference."""
    results: dict[Cell, CellResult] = {}
    for cell in layout.cells():
        m = cell_metrics(cell.rows, cell.config.get("generation.num_samples"))
        ref = layout.reference.get(cell.dataset)
        paired = None
        if ref is not None and not cell.is_full:
            paired = paired_metrics(cell.rows, ref.rows)
        same_seed = ref is not None and cell.config.get("seed") == ref.config.get("seed")
        results[cell] = CellResult(cell, m, paired, same_seed)
    return results
