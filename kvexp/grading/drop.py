"""DROP: exact match and token F1 after DROP's answer normalisation.

Written after the official DROP evaluation (allenai/allennlp-reading-comprehension
``drop_eval.py``): lower-case; split on spaces and hyphens; strip punctuation from every token
that is not a number; numbers normalised (``"3"``, ``"3.0"``, ``"3.00"`` -> ``3.0``; ``1,000`` ->
``1000.0``); articles removed. An answer is a bag of spans; each span a bag of tokens; predicted
and gold spans are aligned one-to-one to maximise F1, and a span pair whose gold side contains
numbers scores 0 unless the prediction shares one of them. EM needs identical normalised spans.

On the hub's validation split ``answers_spans`` flattens all validated annotations of a question
(``{"spans": [...], "types": [...]}``), so its spans are *alternative* golds. We score the
prediction against each span alone and, when there are several text spans, against all of them
as one multi-span answer (the prediction split at commas / "and"), and keep the best EM and the
best F1.

A prediction is graded correct when ``EM == 1`` or ``F1 >= DROP_F1_THRESHOLD`` (0.8), or when a
gold span is a number and the prediction is that number with at most ``MAX_UNIT_WORDS`` words of
unit around it (``"3 points"`` for gold ``3``): the official F1 (0.67 there) punishes the unit
word, yet the answer is right. `drop_em_f1` itself stays the official-style metric.
"""

from __future__ import annotations

import itertools
import math
import re
import string
from collections.abc import Sequence
from typing import Any

from kvexp.grading import extract

DROP_F1_THRESHOLD = 0.8
"""F1 at or above which a DROP answer counts as correct (EM == 1 always does)."""
MAX_UNIT_WORDS = 2
"""Non-number words allowed around a numeric answer for the number rule ("3 field goals")."""

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)
_MULTI_SPAN_SPLIT = re.compile(r",\s+|;\s*|\s+and\s+|\n+")
_MAX_EXACT_ALIGNMENTS = 40_000


def _is_number(token: str) -> bool:
    try:
        return math.isfinite(float(token))
    except ValueError:
        return False


def _normalise_token(token: str) -> str:
    token = token.lower()
    if not _is_number(token):
        token = "".join(char for char in token if char not in _PUNCTUATION)
    if _is_number(token):
        token = str(float(token))
    token = _ARTICLES.sub(" ", token)
    return " ".join(token.split())


def normalize_drop_answer(text: str) -> str:
    """DROP's normalisation of one span: ``"The 3 touchdowns."`` -> ``"3.0 touchdowns"``."""
    parts = (_normalise_token(token) for token in re.split(r"[\s\-]", str(text)))
    return " ".join(part for part in parts if part).strip()


def _bags(spans: Sequence[str]) -> tuple[list[str], list[set[str]]]:
    normalised = [normalize_drop_answer(span) for span in spans]
    return normalised, [set(span.split()) for span in normalised]


def _f1(predicted: set[str], gold: set[str]) -> float:
    common = len(predicted & gold)
    precision = common / len(predicted) if predicted else 1.0
    recall = common / len(gold) if gold else 1.0
    if precision == 0.0 and recall == 0.0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _numbers_agree(gold: set[str], predicted: set[str]) -> bool:
    gold_numbers = {token for token in gold if _is_number(token)}
    return not gold_numbers or bool(gold_numbers & {t for t in predicted if _is_number(t)})


def _aligned_scores(predicted: list[set[str]], gold: list[set[str]]) -> list[float]:
    """Per-gold-span F1 under the best one-to-one alignment, padded with zeros to
    ``max(len(gold), len(predicted))`` (so extra predicted spans cost precision)."""
    scores = [[_f1(p, g) if _numbers_agree(g, p) else 0.0 for p in predicted] for g in gold]
    n_gold, n_pred = len(gold), len(predicted)
    best: tuple[float, ...] = ()
    best_total = -1.0
    if math.perm(max(n_gold, n_pred), min(n_gold, n_pred)) <= _MAX_EXACT_ALIGNMENTS:
        if n_pred >= n_gold:
            candidates = (
                tuple(scores[g][p] for g, p in enumerate(perm))
                for perm in itertools.permutations(range(n_pred), n_gold)
            )
        else:
            candidates = (
                tuple(_assign(scores, perm, n_gold)) for perm in itertools.permutations(range(n_gold), n_pred)
            )
        for candidate in candidates:
            total = sum(candidate)
            if total > best_total:
                best, best_total = candidate, total
    else:  # absurdly many spans: greedy is good enough and bounded
        best = tuple(_greedy(scores, n_gold, n_pred))
    padded = list(best) + [0.0] * (max(n_gold, n_pred) - len(best))
    return padded


def _assign(scores: list[list[float]], gold_for_pred: tuple[int, ...], n_gold: int) -> list[float]:
    """Per-gold scores when predicted span ``p`` is aligned to gold ``gold_for_pred[p]``."""
    row = [0.0] * n_gold
    for pred_index, gold_index in enumerate(gold_for_pred):
        row[gold_index] = scores[gold_index][pred_index]
    return row


def _greedy(scores: list[list[float]], n_gold: int, n_pred: int) -> list[float]:
    row = [0.0] * n_gold
    pairs = sorted(((scores[g][p], g, p) for g in range(n_gold) for p in range(n_pred)), reverse=True)
    used_gold, used_pred = set(), set()
    for score, g, p in pairs:
        if g not in used_gold and p not in used_pred:
            row[g] = score
            used_gold.add(g)
            used_pred.add(p)
    return row


def drop_metrics(predicted: Sequence[str], gold: Sequence[str]) -> tuple[float, float]:
    """(EM, F1) of one predicted answer (list of spans) against one gold answer (list of spans),
    as in the official DROP evaluation (F1 rounded to 2 decimals)."""
    pred_norm, pred_bags = _bags(predicted)
    gold_norm, gold_bags = _bags(gold)
    exact = float(set(pred_norm) == set(gold_norm) and len(pred_norm) == len(gold_norm))
    per_span = _aligned_scores(pred_bags, gold_bags)
    f1 = sum(per_span) / len(per_span) if per_span else 0.0
    return exact, round(f1, 2)


def gold_candidates(gold: Any) -> list[list[str]]:
    """Gold answers to score against, from DROP's ``answers_spans`` field (also accepts a list of
    spans or a single string): each distinct span alone, plus all distinct text spans together
    when there are several."""
    if isinstance(gold, dict):
        spans = [str(span) for span in gold.get("spans") or []]
        types = list(gold.get("types") or [])
    elif isinstance(gold, (list, tuple)):
        spans, types = [str(span) for span in gold], []
    elif gold is None:
        spans, types = [], []
    else:
        spans, types = [str(gold)], []
    if len(types) != len(spans):
        types = ["span"] * len(spans)

    unique, text_spans, seen = [], [], set()
    for span, kind in zip(spans, types):
        key = normalize_drop_answer(span)
        if not key or key in seen:
            continue
        seen.add(key)
        unique.append([span])
        if kind == "span":
            text_spans.append(span)
    if len(text_spans) > 1:
        unique.append(text_spans)
    return unique


def drop_em_f1(prediction: str | None, gold: Any) -> tuple[float, float]:
    """Best (EM, F1) of ``prediction`` against DROP's ``answers_spans`` gold (each maximised
    over the gold candidates of `gold_candidates`). (0.0, 0.0) when there is no prediction."""
    if not prediction or not prediction.strip():
        return 0.0, 0.0
    parts = [part for part in _MULTI_SPAN_SPLIT.split(prediction) if part.strip()] or [prediction]
    best_em = best_f1 = 0.0
    for candidate in gold_candidates(gold):
        predicted = parts if len(candidate) > 1 else [prediction]
        em, f1 = drop_metrics(predicted, candidate)
        best_em, best_f1 = max(best_em, em), max(best_f1, f1)
    return best_em, best_f1


def extract_drop(response: str | None) -> str | None:
    """The answer span: last ``\\boxed{}`` (``\\text{}`` unwrapped), else "answer is X"."""

    def boxed(segment: str) -> str | None:
        found = extract.last_boxed(segment)
        if found is None:
            return None
        return extract.clean_answer(extract.strip_text_macros(found)) or None

    def phrase(segment: str) -> str | None:
        found = extract.answer_phrase(segment)
        return extract.strip_text_macros(found) if found else None

    return extract.first_found(response, [boxed, phrase])


def _number_with_unit(prediction: str, gold: Any) -> bool:
    """Whether ``prediction`` is one of the gold's number-typed spans plus at most
    ``MAX_UNIT_WORDS`` other words, and mentions no other number."""
    if not isinstance(gold, dict):
        return False
    numbers = {
        normalize_drop_answer(span)
        for span, kind in zip(gold.get("spans") or [], gold.get("types") or [])
        if kind == "number"
    }
    tokens = normalize_drop_answer(prediction).split()
    predicted_numbers = {token for token in tokens if _is_number(token)}
    return len(predicted_numbers) == 1 and predicted_numbers <= numbers and len(tokens) - 1 <= MAX_UNIT_WORDS


def grade_drop(response: str | None, gold: Any) -> tuple[str | None, bool]:
    prediction = extract_drop(response)
    if prediction is None:
        return None, False
    em, f1 = drop_em_f1(prediction, gold)
    correct = em == 1.0 or f1 >= DROP_F1_THRESHOLD or _number_with_unit(prediction, gold)
    return prediction, correct
