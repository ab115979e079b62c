"""Statistics of kvexp results: intervals, pass@k and maj@k, bootstraps over problems and seeds, and
the metrics of a cell. The bottom of the package: it imports nothing from kvexp, so the job's
metrics.json (kvexp.pipeline) and the sweep report (kvexp.report) share one definition of every
number.

    intervals  Wilson interval, exact McNemar test
    sampling   pass@k (unbiased), maj@k (tie rule), the k list
    bootstrap  percentile bootstrap over problems, or over seeds and problems
    summary    a cell's metrics (one or several seeds) and its paired comparison with the full cache
"""

from .bootstrap import bootstrap_mean_interval, two_level_interval
from .intervals import Z95, binomial_cdf_half, mcnemar_exact, wilson_interval
from .sampling import default_pass_k, maj_at_k, pass_at_k, resolve_pass_k
from .summary import (
    BOOTSTRAP,
    METHOD_TEXT,
    NO_INTERVAL,
    TWO_LEVEL,
    WILSON,
    CellStats,
    Estimate,
    PairedStats,
    Sample,
    SampleLike,
    cell_stats,
    common_prefix_length,
    paired_stats,
    plain,
)

__all__ = [
    "BOOTSTRAP", "METHOD_TEXT", "NO_INTERVAL", "TWO_LEVEL", "WILSON", "Z95", "CellStats", "Estimate",
    "PairedStats", "Sample", "SampleLike", "binomial_cdf_half", "bootstrap_mean_interval",
    "cell_stats", "plain", "common_prefix_length", "default_pass_k", "maj_at_k", "mcnemar_exact",
    "paired_stats", "pass_at_k", "resolve_pass_k", "two_level_interval", "wilson_interval",
]  # fmt: skip
