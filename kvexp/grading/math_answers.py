"""Math answers (GSM8K, MATH-500, AIME): extraction and equivalence via ``math-verify``.

Equivalence is decided in three steps, cheapest first:

1. the two answers are the same after light normalisation (spaces, ``$``, ``\\%``, thousands
   separators, ``\\left``/``\\right``, ``\\dfrac``);
2. both are plain numbers and equal within 1e-9 relative (``0.5`` vs ``.50``, ``1,000`` vs
   ``1000``);
3. ``math_verify.parse`` + ``math_verify.verify`` on both, wrapped in ``\\boxed{}``: fractions vs
   decimals, ``\\text{}`` units, intervals, sets, tuples, ``x = 5`` vs ``5``, symbolic equality.

Step 3 is guarded: math-verify's own per-call timeouts (``signal.alarm``; only available in the
main thread, elsewhere the call runs without them), every exception caught, and answers longer
than ``MAX_ANSWER_CHARS`` refused outright (no real answer is that long; huge inputs are what
makes sympy hang). A failure of any kind means "not equal", never an exception.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from kvexp.grading import extract

logger = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 1000
VERIFY_TIMEOUT_S = 5
"""Per parse / per comparison timeout handed to math-verify (seconds)."""

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_PLAIN_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
# "18 eggs", "18 dollars per day": a number followed only by plain words (no LaTeX) is the number.
_NUMBER_THEN_WORDS = re.compile(r"^([+-]?[\d,]*\.?\d+)\s+[A-Za-z][A-Za-z ]*$")


# ------------------------------------------------------------------------------------------ gold


def gold_answer(dataset: str, gold: Any) -> str | None:
    """The bare gold answer string from a dataset's own answer field.

    gsm8k: the number after the last ``####`` of the worked solution. aime24 (math-ai): the
    ``solution`` field holds ``\\boxed{N}``. Others: the field itself (ints become strings).
    """
    if gold is None or isinstance(gold, bool):
        return None
    text = str(gold).strip()
    if dataset == "gsm8k" and "####" in text:
        text = text.rsplit("####", 1)[1].strip()
    boxed = extract.last_boxed(text)
    if boxed is not None:
        text = boxed
    return text.strip("$ ").strip() or None


# ------------------------------------------------------------------------------------ extraction


def extract_math(response: str | None, dataset: str) -> str | None:
    """The model's final math answer: last ``\\boxed{}``, then "answer is X" / "Answer: X", then
    for GSM8K ``#### X`` and finally the last number in the text."""
    finders = [extract.boxed_clean, extract.answer_phrase]
    if dataset == "gsm8k":
        finders += [extract.hashes_answer, extract.last_number]
    return extract.first_found(response, finders)


# ---------------------------------------------------------------------------------- normalisation


def _normalise(answer: str) -> str:
    """Cheap canonical form used before (and as input to) math-verify."""
    text = answer.strip()
    text = re.sub(r"\\[,;:! ]", "", text)  # LaTeX spacing: \, \; \: \! "\ "
    text = text.replace("\\left", "").replace("\\right", "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = text.replace("\\$", "").replace("$", "")
    text = text.replace("\\%", "").replace("%", "")
    text = text.replace("{,}", ",")
    text = _THOUSANDS.sub("", text)
    text = text.rstrip(".").strip()
    words = _NUMBER_THEN_WORDS.match(text)
    if words:
        text = words.group(1)
    return text


def _compact(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _as_float(text: str) -> float | None:
    candidate = text.replace(",", "")
    if not _PLAIN_NUMBER.match(candidate):
        return None
    try:
        return float(candidate)
    except ValueError:
        return None


# ----------------------------------------------------------------------------------- math-verify


@contextlib.contextmanager
def _keep_outer_alarm() -> Iterator[None]:
    """math-verify arms ``signal.alarm`` and cancels it with ``alarm(0)`` when done, which would
    silently cancel an alarm the caller (e.g. a job watchdog) had set. Re-arm it afterwards."""
    remaining = signal.alarm(0) if hasattr(signal, "alarm") else 0
    started = time.monotonic()
    try:
        yield
    finally:
        if remaining:
            signal.alarm(max(1, int(round(remaining - (time.monotonic() - started)))))


def _timeout() -> int | None:
    # signal.alarm only works in the main thread; math-verify raises there otherwise.
    if os.name == "posix" and threading.current_thread() is threading.main_thread():
        return VERIFY_TIMEOUT_S
    return None


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout: int | None) -> tuple[Any, ...]:
    from math_verify import parse

    return tuple(parse(f"\\boxed{{{gold}}}", parsing_timeout=timeout))


def _verify(gold: str, prediction: str) -> bool:
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    timeout = _timeout()
    in_main = timeout is not None and hasattr(signal, "alarm")
    try:
        with _keep_outer_alarm() if in_main else contextlib.nullcontext():
            parsed_gold = list(_parse_gold(gold, timeout))
            parsed_pred = parse(f"\\boxed{{{prediction}}}", parsing_timeout=timeout)
            if not parsed_gold or not parsed_pred:
                return False
            return bool(verify(parsed_gold, parsed_pred, timeout_seconds=timeout))
    except (Exception, TimeoutException):  # TimeoutException derives from BaseException
        logger.debug("math-verify failed on gold=%r prediction=%r", gold, prediction, exc_info=True)
        return False


def math_equal(prediction: str | None, gold: str | None) -> bool:
    """Whether two bare math answers are equivalent (see the module docstring)."""
    if not prediction or not gold:
        return False
    if len(prediction) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    pred_n, gold_n = _normalise(prediction), _normalise(gold)
    if not pred_n or not gold_n:
        return False
    if _compact(pred_n) == _compact(gold_n):
        return True
    pred_f, gold_f = _as_float(pred_n), _as_float(gold_n)
    if pred_f is not None and gold_f is not None:
        return abs(pred_f - gold_f) <= 1e-9 * max(1.0, abs(gold_f))
    return _verify(gold_n, pred_n)


def grade_math(dataset: str, response: str | None, gold: Any) -> tuple[str | None, bool]:
    prediction = extract_math(response, dataset)
    return prediction, math_equal(prediction, gold_answer(dataset, gold))
