"""`grade(dataset, response, gold)`: the one public entry point, dispatching on the dataset name."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any

from kvexp.grading.chain import grade_chain
from kvexp.grading.choices import grade_choice, grade_folio, grade_yes_no
from kvexp.grading.drop import grade_drop
from kvexp.grading.math_answers import grade_math

logger = logging.getLogger(__name__)

Grader = Callable[[Any, Any], tuple[str | None, bool]]
"""``(response, gold) -> (prediction, correct)`` for one dataset."""

_GRADERS: dict[str, tuple[str, Grader]] = {
    # name: (answer kind, grader)
    "gsm8k": ("math", partial(grade_math, "gsm8k")),
    # the model organism's generated tasks box one digit: exact match of the last box (kvexp.grading.chain)
    "chain": ("exact", grade_chain),
    "recall": ("exact", grade_chain),
    "read_once": ("exact", grade_chain),
    "local_state": ("exact", grade_chain),
    "math500": ("math", partial(grade_math, "math500")),
    "aime24": ("math", partial(grade_math, "aime24")),
    "aime25": ("math", partial(grade_math, "aime25")),
    "strategyqa": ("yes_no", grade_yes_no),
    "folio": ("true_false_uncertain", grade_folio),
    "logiqa": ("choice", partial(grade_choice, n_options=4, index_based=True)),
    "drop": ("span_f1", grade_drop),
    "reclor": ("choice", partial(grade_choice, n_options=4, index_based=True)),
    "openbookqa": ("choice", partial(grade_choice, n_options=4, index_based=False)),
    "commonsenseqa": ("choice", partial(grade_choice, n_options=5, index_based=False)),
}

ANSWER_KINDS: Mapping[str, str] = MappingProxyType({k: v[0] for k, v in _GRADERS.items()})
"""Dataset name -> answer kind: math, choice, yes_no, true_false_uncertain, span_f1, exact."""

SUPPORTED_DATASETS: tuple[str, ...] = tuple(_GRADERS)


def grade(dataset: str, response: str | None, gold: Any) -> tuple[str | None, bool]:
    """Grade one model response.

    Args:
        dataset: A dataset option name (``gsm8k``, ``math500``, ``aime24``, ``aime25``,
            ``strategyqa``, ``folio``, ``logiqa``, ``drop``, ``reclor``, ``openbookqa``,
            ``commonsenseqa``, and the organism's ``chain``, ``recall``, ``read_once``, ``local_state``).
        response: The model's full output text (thinking included; see
            `kvexp.grading.extract` for where the answer is looked for).
        gold: The dataset's own answer field as stored in its row (``Problem.gold``): GSM8K's
            whole worked ``answer``, MATH-500's ``answer``, math-ai/aime24's boxed ``solution``,
            StrategyQA's bool, FOLIO's label, DROP's ``answers_spans`` dict, ReClor/LogiQA's
            0-based option index, OpenBookQA/CommonsenseQA's ``answerKey``.

    Returns:
        ``(prediction, correct)``: the extracted answer in canonical form (option letter,
        ``yes``/``no``, ``True``/``False``/``Uncertain``, the math or span string), or None when
        the response holds no answer; ``correct`` is False whenever prediction is None.
        Grading never raises on model output: an internal failure is logged and graded incorrect.

    Raises:
        ValueError: ``dataset`` is not a known dataset name.
    """
    try:
        _, grader = _GRADERS[dataset]
    except (KeyError, TypeError):
        raise ValueError(f"no grader for dataset {dataset!r}; known datasets: {', '.join(_GRADERS)}") from None
    if response is not None and not isinstance(response, str):
        response = str(response)
    try:
        prediction, correct = grader(response, gold)
    except Exception:  # a grader bug must cost one sample, not the job
        logger.exception("grading failed for dataset %s; counted as incorrect", dataset)
        return None, False
    return prediction, bool(correct) and prediction is not None
