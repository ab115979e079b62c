"""Closed-set answers: option letters (multiple choice), yes/no (StrategyQA) and
True/False/Uncertain (FOLIO).

Each extractor maps what the model wrote onto the dataset's closed label set, accepting the usual
ways of writing a label: ``\\boxed{B}``, ``\\boxed{\\text{B}}``, ``(B)``, ``B)``, ``B. <option
text>``, "option B", "Answer: (B)", or a lone ``B`` on the last line.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from string import ascii_uppercase
from typing import Any

from kvexp.grading import extract

# ---------------------------------------------------------------------------------- option letters

_LABEL_PREFIX = re.compile(
    r"(?i)^\s*(?:the\s+)?(?:correct\s+)?(?:final\s+)?"
    r"(?:answer|option|choice)\s*(?:is\b)?\s*[:=]?\s*"
)


def _strip_label_text(text: str) -> str:
    text = extract.strip_text_macros(text)
    text = text.replace("**", "").strip().strip("$").strip()
    return _LABEL_PREFIX.sub("", text).strip()


def letter_from_text(text: str | None, letters: str) -> str | None:
    """The option letter ``text`` names, if it names one: ``B``, ``(B)``, ``B)``, ``B.``,
    ``B: Paris``, ``option B``, ``\\text{(B)}``. A single lower-case letter counts too (a box
    holds nothing else); inside longer text only capitals do."""
    if not text:
        return None
    body = _strip_label_text(text)
    if len(body) == 1 and body.upper() in letters:
        return body.upper()
    match = re.match(rf"^\(?([{letters}])\)?(?:[.:)\]]|\s|$)", body)
    return match.group(1) if match else None


@functools.cache
def _phrase_letter(letters: str) -> Callable[[str], str | None]:
    # "answer is (B)", "Answer: B", "answer is option B", "option B is correct",
    # "I choose B": last one wins. Only capital letters count ("the answer is a bank").
    pattern = re.compile(
        rf"(?i:\banswer\b\**\s*(?:is\b|:)\s*\**\s*(?:option\s*|choice\s*)?"
        rf"|\b(?:option|choice)\s+|\b(?:choose|pick|select|go\s+with)\s+(?:option\s+)?)"
        rf"\(?([{letters}])\)?(?![A-Za-z])"
    )

    def find(text: str) -> str | None:
        found = extract.last_match(pattern, text)
        return found.group(1) if found else None

    return find


@functools.cache
def _lone_letter(letters: str) -> Callable[[str], str | None]:
    # The last line is nothing but the letter: "B", "(B)", "**B**", "B." or "Answer: B".
    def find(text: str) -> str | None:
        line = extract.last_line(text)
        if len(line) > 40:
            return None
        body = _strip_label_text(line)
        match = re.fullmatch(rf"\(?([{letters}])\)?[.)]?", body)
        return match.group(1) if match else None

    return find


def extract_choice(response: str | None, n_options: int) -> str | None:
    """The option letter the model chose among the first ``n_options`` letters, or None."""
    letters = ascii_uppercase[:n_options]
    return extract.first_found(
        response,
        [
            lambda seg: letter_from_text(extract.last_boxed(seg), letters),
            _phrase_letter(letters),
            _lone_letter(letters),
        ],
    )


def gold_letter(gold: Any, *, index_based: bool) -> str | None:
    """The gold option letter: ``answerKey`` letters as they are; for datasets whose gold is a
    0-based option index (ReClor ``label``, LogiQA ``correct_option``) the index's letter."""
    if gold is None or isinstance(gold, bool):
        return None
    if isinstance(gold, int) or (isinstance(gold, str) and gold.strip().isdigit()):
        if not index_based:
            return None
        index = int(gold)
        return ascii_uppercase[index] if 0 <= index < len(ascii_uppercase) else None
    text = str(gold).strip().upper()
    return text if len(text) == 1 and text in ascii_uppercase else None


def grade_choice(response: str | None, gold: Any, *, n_options: int, index_based: bool) -> tuple[str | None, bool]:
    prediction = extract_choice(response, n_options)
    expected = gold_letter(gold, index_based=index_based)
    return prediction, prediction is not None and prediction == expected


# -------------------------------------------------------------------------------- closed word sets


def _word_label(mapping: dict[str, str]) -> Callable[[str | None], str | None]:
    """A function mapping text whose first word(s) name a label onto that label."""
    keys = sorted(mapping, key=len, reverse=True)  # "not enough information" before "not"
    pattern = re.compile(r"^(?:" + "|".join(re.escape(k) for k in keys) + r")\b")

    def label(text: str | None) -> str | None:
        if not text:
            return None
        body = _strip_label_text(text).lower().strip(" *$.()[]!:\"'")
        match = pattern.match(body)
        return mapping[match.group(0)] if match else None

    return label


def _last_match(pattern: re.Pattern[str], text: str) -> str | None:
    found = extract.last_match(pattern, text)
    return found.group(1) if found else None


def _closed_extractor(
    label: Callable[[str | None], str | None], phrase: re.Pattern[str] | None = None
) -> Callable[[str | None], str | None]:
    """Boxed label, then "answer is X", then a dataset phrase (``phrase``, group 1 = label),
    then a short last line that starts with a label."""
    finders: list[Callable[[str], str | None]] = [
        lambda seg: label(extract.last_boxed(seg)),
        lambda seg: label(extract.answer_phrase(seg)),
    ]
    if phrase is not None:
        finders.append(lambda seg: label(_last_match(phrase, seg)))
    finders.append(lambda seg: label(extract.last_line(seg)) if len(extract.last_line(seg)) <= 40 else None)

    def extract_label(response: str | None) -> str | None:
        return extract.first_found(response, finders)

    return extract_label


yes_no_label = _word_label({"yes": "yes", "no": "no", "true": "yes", "false": "no"})
extract_yes_no = _closed_extractor(yes_no_label)
"""StrategyQA: 'yes' / 'no' (true/false accepted), or None."""

folio_label = _word_label(
    {
        "true": "True",
        "false": "False",
        "uncertain": "Uncertain",
        "unknown": "Uncertain",
        "undetermined": "Uncertain",
        "cannot be determined": "Uncertain",
        "not enough information": "Uncertain",
    }
)
extract_folio = _closed_extractor(
    folio_label,
    # "the conclusion is (therefore) false"
    re.compile(
        r"(?i)\bconclusion\s+is\s+(?:therefore\s+|thus\s+)?\**\s*"
        r"(true|false|uncertain|unknown)\b"
    ),
)
"""FOLIO: 'True' / 'False' / 'Uncertain' ('unknown' accepted), or None."""


def grade_yes_no(response: str | None, gold: Any) -> tuple[str | None, bool]:
    prediction = extract_yes_no(response)
    if isinstance(gold, bool):
        expected = "yes" if gold else "no"
    else:
        expected = yes_no_label(str(gold)) if gold is not None else None
    return prediction, prediction is not None and prediction == expected


def grade_folio(response: str | None, gold: Any) -> tuple[str | None, bool]:
    prediction = extract_folio(response)
    expected = folio_label(str(gold)) if gold is not None else None
    return prediction, prediction is not None and prediction == expected
