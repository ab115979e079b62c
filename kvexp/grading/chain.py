r"""Grading the model organism's generated tasks (`chain`, `recall`, `read_once`, `local_state` in
`kvexp.data`): exact match of the last boxed answer with the gold digit.

Their traces box one digit, so the answer is the content of the last complete ``\\boxed{...}``
taken literally (no nesting, no normalisation), unlike the math graders.
"""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def extract_chain(response: str | None) -> str | None:
    """The content of the last complete ``\\boxed{...}``, stripped, or None."""
    if not response:
        return None
    found = _BOXED.findall(response)
    return found[-1].strip() if found else None


def grade_chain(response: str | None, gold) -> tuple[str | None, bool]:
    """`(prediction, correct)`: exact match of the last boxed answer with the gold digit."""
    prediction = extract_chain(response)
    return prediction, prediction is not None and prediction == str(gold).strip()
