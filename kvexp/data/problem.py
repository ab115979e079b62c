"""The one record every dataset adapter produces."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One evaluation problem, independent of where its row came from.

    Attributes:
        id: Stable identifier, unique within the dataset: ``"<dataset>-<row's own id>"`` where the
            row has one, else ``"<dataset>-<index in the source split>"``. Results are resumed and
            compared across runs by this id, so it must not depend on shuffling or sharding.
        question: The complete user message: the problem plus the instruction to reason step by
            step and put the final answer in ``\\boxed{}`` (options lettered A, B, ... for
            multiple choice). The engine wraps it in the model's chat template.
        gold: The dataset's own answer field exactly as stored in its row (JSON-serialisable), so
            ``kvexp.grade(dataset, response, gold)`` can re-grade old results when a grader
            improves.
        meta: Free-form, JSON-serialisable extras (dataset, source, index in the split, the row's
            own id, category, subject/level, options ...). Never needed for grading.
    """

    id: str
    question: str
    gold: Any
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, ready for ``json.dumps``."""
        return asdict(self)
