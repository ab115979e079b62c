"""Job metrics (design section 5) from the rows of samples.jsonl.

Accuracy counts error rows as wrong (a sample the run could not serve is not a correct answer), over
every (problem, sample) row of the job. Its 95% interval is Wilson's, which stays inside [0, 1] and
behaves at 0 or n correct, unlike the normal approximation. With several samples per problem the rows
are not independent, so the interval is then optimistic.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from kvexp.report.stats import wilson_interval as _wilson


def wilson_interval(k: int, n: int) -> list[float] | None:
    """The report's Wilson interval as metrics.json stores it: a list, or None when n == 0."""
    return list(_wilson(k, n)) if n else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def compute_metrics(rows: Iterable[dict[str, Any]], **identity: Any) -> dict[str, Any]:
    """Aggregate rows into metrics.json. `identity` (model, dataset, policy, budget, ...) goes in first."""
    rows = list(rows)
    ok = [r for r in rows if r.get("error") is None]
    n, n_ok = len(rows), len(ok)
    n_correct = sum(1 for r in ok if r.get("correct"))
    out_tokens = [r["n_output_tokens"] for r in ok]
    decode_s = sum(r.get("decode_s") or 0.0 for r in ok)
    stops = Counter(r.get("stop_reason") for r in ok)
    return {
        **identity,
        "n": n,
        "n_errors": n - n_ok,
        "n_correct": n_correct,
        "n_problems": len({r["id"] for r in rows}),
        "accuracy": n_correct / n if n else None,
        "accuracy_ci95": wilson_interval(n_correct, n),
        "accuracy_excluding_errors": n_correct / n_ok if n_ok else None,
        "mean_output_tokens": _mean(out_tokens),
        "mean_prompt_tokens": _mean([r["n_prompt_tokens"] for r in ok]),
        "truncation_rate": stops.get("max_new_tokens", 0) / n_ok if n_ok else None,
        "stop_reasons": dict(sorted((str(k), v) for k, v in stops.items())),
        # per sequence: each row's tokens over its own decode time (a batch's rows decode together,
        # so this is what one sequence sees, not the batch's throughput)
        "decode_tokens_per_s": sum(out_tokens) / decode_s if decode_s > 0 else None,
        "mean_prefill_s": _mean([r.get("prefill_s") or 0.0 for r in ok]),
        "kv_bytes_peak": max((r.get("kv_bytes_peak") or 0 for r in ok), default=None),
        "peak_resident_tokens": max((r.get("peak_resident_tokens") or 0 for r in ok), default=None),
        "mean_evicted_tokens": _mean([r.get("n_evicted_tokens") or 0 for r in ok]),
    }
