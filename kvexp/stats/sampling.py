"""Estimators over the samples of one problem: pass@k (unbiased) and majority vote (maj@k).

Both score one problem from its graded samples; a cell's value is the mean over problems (and over
seeds), computed in kvexp.stats.summary.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate for one problem with n samples of which c are correct (Chen et
    al., 2021, "Evaluating Large Language Models Trained on Code"): 1 - C(n-c, k) / C(n, k), the
    chance that k samples drawn without replacement from the n hold at least one correct one."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    # integers are exact; one rounding in the division
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def maj_at_k(votes: Sequence[tuple[Any, bool]], k: int) -> float:
    """Majority-vote score of one problem from the first k of its samples, in sample order.

    `votes` holds (prediction, correct) per sample, ordered by sample index. Samples without an
    answer (prediction None: nothing extracted, or an error row) do not vote; no vote at all scores
    0. Tie rule: when t answers share the most votes, the score is the share of them that are
    correct (the expected score of picking one of them at random), so no answer is favoured by its
    position. The first k samples, not a random subset: sample j is seeded by (seed, problem, j), so
    maj@k of an n-sample run equals maj@k of a run with num_samples = k.
    """
    if not 1 <= k <= len(votes):
        raise ValueError(f"need 1 <= k <= {len(votes)} samples, got k={k}")
    counts: Counter = Counter()
    right: dict[Any, bool] = {}
    for prediction, correct in votes[:k]:
        if prediction is None:
            continue
        answer = prediction.strip() if isinstance(prediction, str) else prediction
        counts[answer] += 1
        right[answer] = right.get(answer, False) or bool(correct)
    if not counts:
        return 0.0
    top = max(counts.values())
    tied = [a for a, n in counts.items() if n == top]
    return sum(right[a] for a in tied) / len(tied)


def default_pass_k(num_samples: int) -> list[int]:
    """1, 2, 4, ... up to num_samples, and num_samples itself."""
    ks = [1 << i for i in range(num_samples.bit_length()) if 1 << i <= num_samples]
    return ks if ks[-1] == num_samples else [*ks, num_samples]


def resolve_pass_k(pass_k: Sequence[int] | None, num_samples: int) -> list[int]:
    """The k of pass@k and maj@k for a run of `num_samples` samples per problem: `pass_k` checked
    (None: `default_pass_k`). Raises ValueError naming the bad value and the fix."""
    if pass_k is None:
        return default_pass_k(num_samples)
    if isinstance(pass_k, (int, str)) or not all(isinstance(k, int) and not isinstance(k, bool) for k in pass_k):
        raise ValueError(f"metrics.pass_k must be a list of integers such as [1,4,16], got {pass_k!r}")
    bad = [k for k in pass_k if not 1 <= k <= num_samples]
    if bad:
        raise ValueError(
            f"metrics.pass_k has k={bad} outside 1..generation.num_samples={num_samples}: pass@k and "
            f"maj@k need at least k samples per problem; drop those k or raise generation.num_samples"
        )
    return sorted(set(pass_k))
