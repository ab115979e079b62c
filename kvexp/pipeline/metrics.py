"""Job metrics (README, "Reading results") from the rows of samples.jsonl.

The numbers that the sweep report shows too (accuracy and its interval, pass@k, maj@k, lengths,
stop reasons, cost) come from kvexp.stats.cell_stats, the one definition both use, so a job's
metrics.json and the report's cell agree. Accuracy is pass@1: the mean over problems of the share
of correct samples, error rows counted as wrong (a sample the run could not serve is not a correct
answer). Its 95% interval is Wilson's with one sample per problem, else a bootstrap over problems
(the samples of one problem are not independent). What only the job records (prompt lengths, stop
reasons, prefill time, evictions) is summed up here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from kvexp.stats import Sample, cell_stats, plain


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def compute_metrics(rows: Iterable[dict[str, Any]], **identity: Any) -> dict[str, Any]:
    """Aggregate rows into metrics.json. `identity` (model, dataset, policy, budget, ...) goes in first;
    its `num_samples` and `pass_k` (the k of pass@k and maj@k) shape the accuracy metrics."""
    rows = list(rows)
    ok = [r for r in rows if r.get("error") is None]
    stats = cell_stats(
        {identity.get("seed"): [Sample.from_json(r) for r in rows]},
        pass_k=identity.get("pass_k"),
        num_samples=identity.get("num_samples"),
    )
    stops = Counter(r.get("stop_reason") for r in ok)
    pass1 = stats.pass1.as_json()
    return {
        **identity,
        "n": len(rows),
        "n_errors": stats.n_errors,
        "n_correct": sum(1 for r in ok if r.get("correct")),
        "n_problems": stats.n_problems,
        "accuracy": pass1["value"],
        "accuracy_ci95": pass1["ci95"],
        "accuracy_ci_method": pass1["ci_method"],
        "accuracy_excluding_errors": _mean([bool(r.get("correct")) for r in ok]),
        "pass_at_k": {str(k): e.as_json() for k, e in stats.pass_at.items()},
        "maj_at_k": {str(k): e.as_json() for k, e in stats.maj_at.items()},
        "mean_output_tokens": plain(stats.mean_output_tokens),
        "mean_prompt_tokens": _mean([r["n_prompt_tokens"] for r in ok]),
        "truncation_rate": plain(stats.truncation_rate),
        "unextracted_rate": plain(stats.unextracted_rate),
        "stop_reasons": dict(sorted((str(k), v) for k, v in stops.items())),
        # per sequence: each row's tokens over its own decode time (a batch's rows decode together,
        # so this is what one sequence sees, not the batch's throughput)
        "decode_tokens_per_s": plain(stats.decode_tokens_per_s),
        "mean_prefill_s": _mean([r.get("prefill_s") or 0.0 for r in ok]),
        "kv_bytes_peak": plain(stats.kv_bytes_peak),
        "peak_resident_tokens": max((r.get("peak_resident_tokens") or 0 for r in ok), default=None),
        "mean_evicted_tokens": _mean([r.get("n_evicted_tokens") or 0 for r in ok]),
        "prompt_kept_share": plain(stats.prompt_kept_share),
        "prompt_kept_any": plain(stats.prompt_kept_any),
    }
