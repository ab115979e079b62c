"""Closed-form intervals and tests: Wilson's interval for a proportion, the exact McNemar test.

scipy is deliberately not a dependency: the binomial tails are summed exactly with integer
arithmetic, which is exact for any n a sweep produces.
"""

from __future__ import annotations

import math

#: Two-sided 95% normal quantile, Phi^-1(0.975).
Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95% by default).

    Chosen over the normal (Wald) interval because it stays inside [0, 1] and keeps its coverage at
    the small n and extreme accuracies (0 or 1) that reasoning sweeps often produce.
    Returns (nan, nan) for n == 0.
    """
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # The bounds at k == 0 and k == n are exactly 0 and 1; do not let rounding say otherwise.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)


def binomial_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), computed exactly with integers."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    # Python ints are exact; true division of two ints rounds once, so the tail is exact to 1 ulp.
    return sum(math.comb(n, i) for i in range(k + 1)) / (1 << n)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test on b and c discordant pairs.

    Under the null hypothesis each discordant pair goes either way with probability 1/2, so the
    p-value is the two-sided binomial tail p = min(1, 2 * P(X <= min(b, c))), X ~ Bin(b + c, 1/2).
    No discordant pairs means no evidence of a difference: p = 1.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_cdf_half(min(b, c), n))
