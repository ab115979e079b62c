"""Datasets: registry, row adapters and `load_problems`.

    >>> from kvexp.data import load_problems
    >>> problems = load_problems("gsm8k", source="bundled", limit=8, seed=0)
    >>> problems[0].question  # the user message, ending with the \\boxed{} instruction

Importing this package is cheap: ``datasets`` is only imported when the hub is actually used.
"""

from kvexp.data.errors import DatasetUnavailableError
from kvexp.data.loader import SOURCES, load_problems
from kvexp.data.problem import Problem
from kvexp.data.registry import (
    BUNDLED_DATASETS,
    CATEGORIES,
    DATASETS,
    GENERATED,
    REGISTRY,
    DatasetSpec,
    GeneratedSpec,
    get_spec,
)

__all__ = [
    "BUNDLED_DATASETS",
    "CATEGORIES",
    "DATASETS",
    "GENERATED",
    "REGISTRY",
    "SOURCES",
    "DatasetSpec",
    "DatasetUnavailableError",
    "GeneratedSpec",
    "Problem",
    "get_spec",
    "load_problems",
]
