"""A cell's metrics from its graded samples: the one definition that metrics.json (one job, one
seed) and the sweep report (a cell over one or several seeds) both use, so they agree on every
number.

Every accuracy-like metric is a mean over seeds of a mean over problems of a per-problem score:
pass@1 (the share of the problem's samples that are correct), pass@k (the unbiased estimate),
maj@k (a majority vote), and, against the full cache, the paired change in correctness and the
output-length ratio. Error rows count as incorrect samples (a sample the run could not serve is not
a correct answer) and have no length. Intervals are 95%: Wilson's for a proportion (one seed, one
sample per problem), else a percentile bootstrap over problems, and over seeds as well when there
are several (kvexp.stats.bootstrap).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .bootstrap import MEAN, MEDIAN, RESAMPLES, SEED, matrix_statistic, two_level_interval
from .intervals import mcnemar_exact, wilson_interval
from .sampling import maj_at_k, pass_at_k, resolve_pass_k

TRUNCATED = "max_new_tokens"
REPETITION = "repetition"
NAN = math.nan

WILSON, BOOTSTRAP, TWO_LEVEL, NO_INTERVAL = "wilson", "bootstrap", "two-level bootstrap", "none"
METHOD_TEXT = {
    WILSON: "Wilson score interval",
    BOOTSTRAP: f"percentile bootstrap over problems ({RESAMPLES:,} resamples, seed {SEED})",
    TWO_LEVEL: (f"two-level percentile bootstrap over seeds and problems ({RESAMPLES:,} resamples, seed {SEED})"),
    NO_INTERVAL: "no interval",
}


class SampleLike(Protocol):
    """What the statistics read from one samples.jsonl row (the report's rows have these fields)."""

    id: str
    sample_idx: int
    correct: bool  # False for an error row
    prediction: Any  # None: no answer extracted
    n_output_tokens: int | None
    stop_reason: str | None
    kv_bytes_peak: float | None
    decode_s: float | None
    output_ids: list[int] | None
    prompt_kept_share: float | None  # None where the row did not record it (an error, an older run)
    prompt_kept_any: float | None

    @property
    def is_error(self) -> bool: ...


def _number(value: Any) -> Any:
    """The value if it is a finite number, else None (missing, null or NaN fields)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Sample:
    """A samples.jsonl row as the statistics read it."""

    id: str
    sample_idx: int
    correct: bool
    prediction: Any
    error: str | None
    n_output_tokens: int | None
    stop_reason: str | None
    kv_bytes_peak: float | None
    decode_s: float | None
    output_ids: list[int] | None = None
    prompt_kept_share: float | None = None
    prompt_kept_any: float | None = None

    @property
    def key(self) -> tuple[str, int]:
        """Pairing key between runs on the same problems: (problem id, sample index)."""
        return (self.id, self.sample_idx)

    @property
    def is_error(self) -> bool:
        return self.error is not None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Sample:
        error = obj.get("error")
        return cls(
            id=str(obj["id"]),  # 7 and "7" from different writers are one problem
            sample_idx=int(obj.get("sample_idx") or 0),
            correct=bool(obj.get("correct")) and error is None,
            prediction=obj.get("prediction"),
            error=None if error is None else str(error),
            n_output_tokens=_number(obj.get("n_output_tokens")),
            stop_reason=obj.get("stop_reason"),
            kv_bytes_peak=_number(obj.get("kv_bytes_peak")),
            decode_s=_number(obj.get("decode_s")),
            output_ids=obj.get("output_ids"),
            prompt_kept_share=_number(obj.get("prompt_kept_share")),
            prompt_kept_any=_number(obj.get("prompt_kept_any")),
        )


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds of a mean over problems, its 95% interval, and each seed's value."""

    value: float
    lo: float
    hi: float
    method: str  # WILSON, BOOTSTRAP, TWO_LEVEL or NO_INTERVAL
    per_seed: tuple[float, ...] = ()  # in the order of the cell's seeds

    @property
    def seed_sd(self) -> float:
        """Standard deviation between seeds (n - 1 in the denominator); NaN with fewer than 2."""
        vals = [v for v in self.per_seed if not math.isnan(v)]
        return float(np.std(vals, ddof=1)) if len(vals) > 1 else NAN

    def as_json(self) -> dict[str, Any]:
        """For metrics.json: value, ci95 (None when undefined) and the interval's method."""
        ci = None if math.isnan(self.lo) else [self.lo, self.hi]
        return {"value": plain(self.value), "ci95": ci, "ci_method": self.method}


def plain(x: Any) -> Any:
    """NaN (undefined) as JSON null; anything else unchanged."""
    return None if isinstance(x, float) and math.isnan(x) else x


class _Units:
    """The (seed, problem) units of one or several runs, with each unit's items."""

    def __init__(self, seeds: Sequence[Hashable]):
        self.seeds = list(seeds)
        self.problems: set[str] = set()
        self.items: dict[tuple[int, str], list] = defaultdict(list)

    def add(self, seed_index: int, problem: str, item: Any) -> None:
        self.problems.add(problem)
        self.items[(seed_index, problem)].append(item)

    def estimate(self, score, statistic: str = MEAN, interval: bool = True) -> Estimate:
        """`score(items)` per unit (None: the unit has no score) -> Estimate over the units (without
        its interval when `interval` is False)."""
        # problems in id order: the same rows give the same bootstrap draws in whatever order they
        # were written, so a job's metrics.json and the report agree to the last digit
        column = {p: i for i, p in enumerate(sorted(self.problems))}
        shape = (len(self.seeds), len(column))
        x, mask = np.zeros(shape), np.zeros(shape, dtype=bool)
        for (s, p), items in self.items.items():
            v = score(items)
            if v is not None:
                x[s, column[p]], mask[s, column[p]] = v, True
        if not mask.any():
            return Estimate(NAN, NAN, NAN, NO_INTERVAL, tuple(NAN for _ in self.seeds))
        per_seed = tuple(matrix_statistic(x[s : s + 1], mask[s : s + 1], statistic) for s in range(shape[0]))
        value = matrix_statistic(x, mask, statistic)
        if not interval:
            return Estimate(value, NAN, NAN, NO_INTERVAL, per_seed)
        lo, hi = two_level_interval(x, mask, statistic)
        method = TWO_LEVEL if sum(mask.any(axis=1)) > 1 else BOOTSTRAP
        return Estimate(value, lo, hi, method, per_seed)


@dataclass
class CellStats:
    """One cell's numbers. Rates over generations exclude error rows; accuracy counts them wrong."""

    seeds: tuple
    n_rows: int
    n_problems: int
    samples_per_problem: int  # most samples seen for one problem in one seed
    n_errors: int
    pass_k: tuple[int, ...]  # the k of pass_at and maj_at
    pass1: Estimate  # accuracy: pass@1, the mean over problems of the share of correct samples
    pass_at: dict[int, Estimate]  # unbiased pass@k
    maj_at: dict[int, Estimate]  # majority vote of the first k samples
    mean_output_tokens: float
    truncation_rate: float  # share stopped at max_new_tokens
    unextracted_rate: float  # share whose answer could not be extracted (prediction None)
    repetition_rate: float
    decode_tokens_per_s: float
    kv_bytes_peak: float
    # prompt survival at the end of generation, mean over rows without error that recorded it
    prompt_kept_share: float = NAN  # share of (prompt token, layer, KV head) entries resident
    prompt_kept_any: float = NAN  # share of prompt tokens resident in any head of any layer

    @property
    def accuracy(self) -> float:
        return self.pass1.value

    @property
    def ci_lo(self) -> float:
        return self.pass1.lo

    @property
    def ci_hi(self) -> float:
        return self.pass1.hi

    @property
    def ci_method(self) -> str:
        return self.pass1.method

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)


def seed_order(seeds) -> list:
    """Seeds sorted (numbers first, then anything else by its text), the order of per_seed."""
    return sorted(seeds, key=lambda s: (not isinstance(s, (int, float)), s if isinstance(s, (int, float)) else str(s)))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else NAN


def cell_stats(
    runs: Mapping[Hashable, Sequence[SampleLike]],
    pass_k: Sequence[int] | None = None,
    num_samples: int | None = None,
) -> CellStats:
    """The metrics of a cell whose runs (seed -> rows) differ only in the seed.

    `num_samples` is the configured samples per problem (the rows of a partial run may show fewer);
    `pass_k` the k of pass@k and maj@k (None: 1, 2, 4, ... up to the samples per problem).
    """
    units = _Units(seed_order(runs))
    for s, seed in enumerate(units.seeds):
        for row in runs[seed]:
            units.add(s, row.id, row)
    for items in units.items.values():
        items.sort(key=lambda r: r.sample_idx)
    rows = [r for seed in units.seeds for r in runs[seed]]
    most = max((len(v) for v in units.items.values()), default=0)
    n = max(most, num_samples if isinstance(num_samples, int) else 0, 1)
    # a k above the samples written so far (a partial run) cannot be estimated yet
    ks = [k for k in resolve_pass_k(pass_k, n) if k <= max(most, 1)]

    def correct(items) -> int:
        return sum(r.correct for r in items)

    def votes(items) -> list[tuple[Any, bool]]:
        return [(None if r.is_error else r.prediction, r.correct) for r in items]

    one_sample = len(units.seeds) == 1 and n == 1
    pass1 = units.estimate(lambda items: correct(items) / len(items), interval=not one_sample)
    if one_sample and rows:
        # one sample per problem: the accuracy is a proportion of independent answers
        lo, hi = wilson_interval(sum(r.correct for r in rows), len(rows))
        pass1 = Estimate(pass1.value, lo, hi, WILSON, pass1.per_seed)
    # a unit (seed, problem) with fewer than k samples (a partial run) has no pass@k or maj@k
    pass_at = {
        k: pass1 if k == 1 else units.estimate(
            lambda items, k=k: pass_at_k(len(items), correct(items), k) if len(items) >= k else None
        )
        for k in ks
    }  # fmt: skip
    maj_at = {k: units.estimate(lambda items, k=k: maj_at_k(votes(items), k) if len(items) >= k else None) for k in ks}

    ok = [r for r in rows if not r.is_error]
    lengths = [r.n_output_tokens for r in ok if r.n_output_tokens is not None]
    timed = [r for r in ok if r.decode_s is not None and r.n_output_tokens is not None]
    decode_s = sum(r.decode_s for r in timed)
    kv = [r.kv_bytes_peak for r in ok if r.kv_bytes_peak is not None]  # as before: a failed row's peak is not the job's
    return CellStats(
        seeds=tuple(units.seeds),
        n_rows=len(rows),
        n_problems=len(units.problems),
        samples_per_problem=most,
        n_errors=len(rows) - len(ok),
        pass_k=tuple(ks),
        pass1=pass1,
        pass_at=pass_at,
        maj_at=maj_at,
        mean_output_tokens=_mean(lengths),
        truncation_rate=_mean([r.stop_reason == TRUNCATED for r in ok]),
        unextracted_rate=_mean([r.prediction is None for r in ok]),
        repetition_rate=_mean([r.stop_reason == REPETITION for r in ok]),
        # Totals, not a mean of per-row speeds: long outputs dominate the time, so they must
        # dominate the rate as well.
        decode_tokens_per_s=sum(r.n_output_tokens for r in timed) / decode_s if decode_s > 0 else NAN,
        kv_bytes_peak=max(kv) if kv else NAN,
        prompt_kept_share=_mean([r.prompt_kept_share for r in ok if r.prompt_kept_share is not None]),
        prompt_kept_any=_mean([r.prompt_kept_any for r in ok if r.prompt_kept_any is not None]),
    )


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading positions where two token-id sequences agree (the whole length when they
    are identical: the outputs never diverged)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass
class PairedStats:
    """A cell against the full cache on shared (seed, id, sample_idx): each seed's run against the
    same seed's full-cache run."""

    seeds: tuple  # seeds with a full-cache run of the same seed
    unpaired_seeds: tuple  # seeds of the cell without one (left out of every number here)
    n_pairs: int
    accuracy_policy: float  # on the paired rows only
    accuracy_full: float
    delta: Estimate  # accuracy_policy - accuracy_full, with its interval and per-seed values
    gains: int  # policy correct, full cache wrong (pooled over seeds)
    losses: int  # full cache correct, policy wrong
    p_value: float  # exact McNemar on gains vs losses
    n_fidelity: int  # pairs without an error row on either side
    same_prediction: float  # share of those with equal predictions
    identical_output: float  # share of those with identical output_ids
    mean_prefix_tokens: float  # mean output tokens before the first differing output id
    n_length_pairs: int  # pairs without error whose full-cache output has tokens
    length_ratio: Estimate  # mean over problems (and seeds) of output tokens / the full cache's
    length_ratio_median: Estimate  # median over (seed, problem) of the same per-problem ratio


def paired_stats(
    runs: Mapping[Hashable, Sequence[SampleLike]], full_runs: Mapping[Hashable, Sequence[SampleLike]]
) -> PairedStats:
    """Change against the full cache on the same seeds, problems and samples.

    Pairs are matched by (seed, id, sample_idx), so a partial cell is compared on what it has, and
    a seed without its own full-cache run is left out (and named) rather than compared with another
    seed's. Fidelity and lengths ignore pairs where either side failed: they measure how far
    generations drift; errors are counted in the accuracy.
    """
    paired = [s for s in seed_order(runs) if s in full_runs]
    unpaired = tuple(s for s in seed_order(runs) if s not in full_runs)
    units = _Units(paired)
    pairs = []
    for i, seed in enumerate(paired):
        full_by_key = {(r.id, r.sample_idx): r for r in full_runs[seed]}
        for r in runs[seed]:
            f = full_by_key.get((r.id, r.sample_idx))
            if f is not None:
                pairs.append((r, f))
                units.add(i, r.id, (r, f))
    gains = sum(p.correct and not f.correct for p, f in pairs)
    losses = sum(f.correct and not p.correct for p, f in pairs)
    clean = [(p, f) for p, f in pairs if not p.is_error and not f.is_error]
    prefixes = [common_prefix_length(p.output_ids or [], f.output_ids or []) for p, f in clean]

    def ratios(items) -> list[float]:
        return [
            p.n_output_tokens / f.n_output_tokens
            for p, f in items
            if not p.is_error and not f.is_error and p.n_output_tokens is not None
            and f.n_output_tokens  # a full-cache output of 0 tokens has no ratio
        ]  # fmt: skip

    def mean_ratio(items) -> float | None:
        r = ratios(items)
        return sum(r) / len(r) if r else None

    return PairedStats(
        seeds=tuple(paired),
        unpaired_seeds=unpaired,
        n_pairs=len(pairs),
        accuracy_policy=units.estimate(lambda i: _mean([p.correct for p, _ in i]), interval=False).value,
        accuracy_full=units.estimate(lambda i: _mean([f.correct for _, f in i]), interval=False).value,
        delta=units.estimate(lambda items: _mean([p.correct - f.correct for p, f in items])),
        gains=gains,
        losses=losses,
        p_value=mcnemar_exact(losses, gains),
        n_fidelity=len(clean),
        same_prediction=_mean([p.prediction == f.prediction for p, f in clean]),
        identical_output=_mean([(p.output_ids or []) == (f.output_ids or []) for p, f in clean]),
        mean_prefix_tokens=_mean(prefixes),
        n_length_pairs=len(ratios(pairs)),
        length_ratio=units.estimate(mean_ratio),
        length_ratio_median=units.estimate(mean_ratio, MEDIAN),
    )
