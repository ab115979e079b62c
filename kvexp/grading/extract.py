"""Answer extraction from free-form model output.

Order of evidence, for every dataset: the last complete ``\\boxed{...}`` (what every kvexp prompt
asks for), then phrases such as "the answer is X" / "Answer: X", then dataset-specific last resorts
(``#### X`` and the last number for GSM8K, a lone option letter on the last line for multiple
choice). For reasoning models that close their thoughts with ``</think>``, the text after the last
``</think>`` is searched first: that is where the committed answer is; only if it holds none is the
whole response searched (a truncated or unclosed thought may still have boxed an answer).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

THINK_END = "</think>"

# `\boxed` / `\fbox`, not followed by another letter (so `\boxedx` is not a box).
_BOX_CMD = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# `\text{X}` and friends, used by models to typeset words inside math.
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|textrm|texttt|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}")
# "The final answer is X" / "Answer: X" / "**Answer:** X"; X runs to the end of the line.
_ANSWER_PHRASE = re.compile(
    r"(?i)\b(?:final\s+answer|answer)\s*(?:\*\*)?\s*(?:is\b\s*:?|:|=)\s*(?:\*\*)?\s*(?P<ans>[^\n]+)"
)
_HASHES = re.compile(r"####\s*(?P<ans>[^\n]+)")
# A minus sign right after a word or ")" is subtraction ("3-5"), not a sign.
_NUMBER = re.compile(r"(?:(?<![\w)])-)?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")


# ------------------------------------------------------------------------------------ boxed answers


def _braced(text: str, start: int) -> int | None:
    """Index just past the brace group opening at ``text[start] == '{'``, or None if unbalanced.
    Escaped braces (``\\{``, ``\\}``) are literal characters, not grouping."""
    depth = 0
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def iter_boxed(text: str) -> Iterator[str]:
    """Contents of every complete ``\\boxed{...}`` / ``\\fbox{...}`` in order of appearance.

    Handles nested braces (``\\boxed{\\frac{1}{2}}``), a space before the brace
    (``\\boxed {5}``) and the brace-less form ``\\boxed 5``. A box cut off before its closing
    brace (truncated generation) is skipped.
    """
    for match in _BOX_CMD.finditer(text):
        pos = match.end()
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos < len(text) and text[pos] == "{":
            end = _braced(text, pos)
            if end is not None:
                yield text[pos + 1 : end - 1].strip()
        elif pos > match.end():  # `\boxed 5`: one token, up to whitespace or `$`
            token = re.match(r"[^\s$]+", text[pos:])
            if token:
                yield token.group(0)


def last_boxed(text: str | None) -> str | None:
    """Content of the last complete, non-empty ``\\boxed{}`` in ``text``, or None.

    Empty boxes are skipped: models sometimes echo the instruction ("put it in \\boxed{}")
    after their answer, and that must not hide the real one.
    """
    if not text:
        return None
    found = None
    for content in iter_boxed(text):
        if content:
            found = content
    return found


# --------------------------------------------------------------------------------------- cleaning


def strip_text_macros(text: str) -> str:
    """``\\text{B}`` -> ``B`` (repeatedly, so nested wrappers unwrap too)."""
    previous = None
    while previous != text:
        previous, text = text, _TEXT_CMD.sub(r"\1", text)
    return text


def clean_answer(text: str, *, first_sentence: bool = False) -> str:
    """Trim what surrounds an answer: whitespace, markdown bold, ``$``/``\\(``/``\\[`` math
    delimiters and trailing punctuation.

    With ``first_sentence`` (for answers taken from running text, not from a box), also cut at the
    end of the first sentence: "18. I hope this helps" -> "18". Never applied to boxed answers,
    where "St. Louis" must survive.
    """
    text = text.strip()
    # Keep only the first math span if the phrase starts with one: "$\frac{1}{2}$ cups." -> inner.
    span = re.match(r"^\$+([^$]+)\$+", text) or re.match(r"^\\[(\[](.+?)\\[)\]]", text)
    if span:
        text = span.group(1)
    text = text.strip().strip("*").strip()
    text = re.sub(r"^\\[(\[]|\\[)\]]$", "", text).strip()
    text = text.strip("$").strip()
    if first_sentence:  # a period followed by a space ends a sentence; a decimal point does not
        text = re.split(r"(?<!\d)\.\s|(?<=\d)\.\s+(?=[A-Z])", text, maxsplit=1)[0]
    return text.rstrip(" .,;:").strip()


def last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The last match of ``pattern`` in ``text`` (a reply's final answer is its last one), or None."""
    found = None
    for found in pattern.finditer(text):  # noqa: B007 - the loop keeps the last match
        pass
    return found


def answer_phrase(text: str) -> str | None:
    """X from the last "answer is X" / "Answer: X" in ``text``."""
    found = last_match(_ANSWER_PHRASE, text)
    if found is None:
        return None
    answer = clean_answer(found.group("ans"), first_sentence=True)
    return answer or None


def hashes_answer(text: str) -> str | None:
    """X from the last ``#### X`` (GSM8K's own answer marker)."""
    found = last_match(_HASHES, text)
    return clean_answer(found.group("ans"), first_sentence=True) or None if found else None


def last_number(text: str) -> str | None:
    """The last number in ``text`` (``1,000`` and ``-3.5`` included), or None."""
    found = last_match(_NUMBER, text)
    return found.group(0).rstrip(",") if found else None


def last_line(text: str) -> str:
    """The last non-empty line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


# ------------------------------------------------------------------------------------ strategies


def segments(response: str) -> list[str]:
    """Where to look, in order: the text after the last ``</think>`` (if any), then everything."""
    if THINK_END in response:
        after = response.rsplit(THINK_END, 1)[1]
        return [after, response] if after.strip() else [response]
    return [response]


def first_found(response: str | None, finders: Sequence[Callable[[str], str | None]]) -> str | None:
    """Run ``finders`` on each segment (see `segments`) and return the first non-empty result."""
    if not response:
        return None
    for segment in segments(response):
        for finder in finders:
            found = finder(segment)
            if found:
                return found
    return None


def boxed_clean(text: str) -> str | None:
    """The last boxed answer, cleaned (``\\text{}`` kept: math answers may need it)."""
    found = last_boxed(text)
    return clean_answer(found) or None if found is not None else None
