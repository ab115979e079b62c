"""Percentile bootstrap intervals over problems, and over seeds and problems together.

A cell's value is a mean over seeds of a mean over problems of a per-problem score (the share of
correct samples, a pass@k estimate, a majority vote, a length ratio). The scores form a matrix
X[seed, problem]; a problem may be missing from a seed (a partial run), which a mask records.

The two-level bootstrap resamples both sources of variation: problems (with replacement, the same
draw for every seed, because every seed runs the same problems and a hard problem is hard in each)
and seeds (with replacement). With one seed it is the ordinary bootstrap over problems, which
respects that samples of one problem are correlated. Resamples are drawn as multinomial weights in
chunks, so memory stays small for datasets with thousands of problems.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

#: A fixed seed makes the report reproducible: the same rows always give the same interval.
RESAMPLES = 10_000
SEED = 0
LEVEL = 0.95
MEAN, MEDIAN = "mean", "median"

_CHUNK_ELEMENTS = 2_000_000


def _weights(
    n_seeds: int, n_problems: int, resamples: int, seed: int, units: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunks of (seed weights [b, n_seeds], problem weights [b, n_problems]): how often each seed
    and each problem is drawn in each of b resamples."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // max(units, n_problems, 1))
    for start in range(0, resamples, chunk):
        b = min(resamples, start + chunk) - start
        wp = _counts(rng, n_problems, b)
        ws = _counts(rng, n_seeds, b) if n_seeds > 1 else np.ones((b, 1))
        yield ws, wp


def _counts(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """[b, n]: how often each of n items is drawn in b draws of n with replacement."""
    drawn = rng.integers(0, n, size=(b, n)) + np.arange(b)[:, None] * n
    return np.bincount(drawn.ravel(), minlength=b * n).reshape(b, n).astype(float)


def _mean_of_means(x: np.ndarray, mask: np.ndarray, ws: np.ndarray, wp: np.ndarray) -> np.ndarray:
    """Per resample: the seed-weighted mean of each seed's problem-weighted mean score."""
    num = wp @ np.where(mask, x, 0.0).T  # [b, seeds]
    den = wp @ mask.T.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_seed = np.where(den > 0, num / den, 0.0)
        w = ws * (den > 0)  # a seed none of whose problems was drawn has no mean
        return (per_seed * w).sum(axis=1) / w.sum(axis=1)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Median of `values` (sorted ascending) under each row of `weights` [b, n]: the mean of the
    lower and upper weighted medians, so unit weights give numpy's median."""
    cum = np.cumsum(weights, axis=1)
    half = cum[:, -1:] / 2.0
    lower = np.argmax(cum >= half, axis=1)
    upper = np.argmax(cum > half, axis=1)
    return (values[lower] + values[upper]) / 2.0


def matrix_statistic(x: np.ndarray, mask: np.ndarray, statistic: str = MEAN) -> float:
    """The point estimate: MEAN, the mean over seeds of each seed's mean over its problems; MEDIAN,
    the median over every (seed, problem) score."""
    if not mask.any():
        return math.nan
    if statistic == MEDIAN:
        return float(np.median(x[mask]))
    per_seed = [x[s][mask[s]].mean() for s in range(x.shape[0]) if mask[s].any()]
    return float(np.mean(per_seed))


def two_level_interval(
    x: np.ndarray,
    mask: np.ndarray | None = None,
    statistic: str = MEAN,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile interval of `matrix_statistic(x, mask, statistic)` under resampling of seeds (rows)
    and problems (columns). One row: the bootstrap over problems alone."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"need a [seeds, problems] matrix, got shape {x.shape}")
    mask = np.ones(x.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if not mask.any():
        return (math.nan, math.nan)
    n_seeds, n_problems = x.shape
    stats = np.empty(resamples)
    done = 0
    if statistic == MEDIAN:
        seed_of, problem_of = np.nonzero(mask)
        order = np.argsort(x[mask], kind="stable")
        values, seed_of, problem_of = x[mask][order], seed_of[order], problem_of[order]
        units = values.size
    elif statistic == MEAN:
        units = n_seeds * n_problems
    else:
        raise ValueError(f"statistic must be {MEAN!r} or {MEDIAN!r}, got {statistic!r}")
    for ws, wp in _weights(n_seeds, n_problems, resamples, seed, units):
        if statistic == MEAN:
            chunk = _mean_of_means(x, mask, ws, wp)
        else:
            chunk = weighted_median(values, ws[:, seed_of] * wp[:, problem_of])
        stats[done : done + len(chunk)] = chunk
        done += len(chunk)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(stats, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def bootstrap_mean_interval(
    values: Sequence[float], level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`, one value per problem (one seed)."""
    if len(values) == 0:
        return (math.nan, math.nan)
    return two_level_interval(np.asarray(values, dtype=float)[None, :], level=level, resamples=resamples, seed=seed)
