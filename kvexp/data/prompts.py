"""User-message templates shared by the dataset adapters.

Every prompt ends with the same kind of instruction: reason step by step, then put the final answer
in ``\\boxed{}``. One answer convention for all eleven datasets keeps the graders simple (the boxed
answer is always tried first) and matches what the reasoning models in the reference study
(DeepSeek-R1 distills, Nemotron, Qwen) were trained to emit.
"""

from __future__ import annotations

from collections.abc import Sequence
from string import ascii_uppercase

STEP_BY_STEP = "Please reason step by step"


def option_letters(n: int) -> list[str]:
    """The first ``n`` option letters: ``option_letters(4) == ['A', 'B', 'C', 'D']``."""
    if not 1 <= n <= len(ascii_uppercase):
        raise ValueError(f"cannot letter {n} options; expected 1..{len(ascii_uppercase)}")
    return list(ascii_uppercase[:n])


def _letter_list(letters: Sequence[str]) -> str:
    """'A, B, C or D'."""
    return ", ".join(letters[:-1]) + f" or {letters[-1]}" if len(letters) > 1 else letters[0]


def math_prompt(problem: str) -> str:
    """Free-form math answer (GSM8K, MATH-500, AIME)."""
    return f"{problem.strip()}\n\n{STEP_BY_STEP}, and put your final answer within \\boxed{{}}."


def choice_prompt(question: str, options: Sequence[str], *, context: str | None = None) -> str:
    """Multiple choice with options lettered A, B, C ... in the order given."""
    letters = option_letters(len(options))
    lines = []
    if context and context.strip():
        lines += [context.strip(), ""]
    lines += [f"Question: {question.strip()}", "", "Options:"]
    lines += [f"{letter}. {str(text).strip()}" for letter, text in zip(letters, options)]
    lines += [
        "",
        f"{STEP_BY_STEP}, and put the letter of the correct option ({_letter_list(letters)}) within \\boxed{{}}.",
    ]
    return "\n".join(lines)


def yes_no_prompt(question: str) -> str:
    """Yes/no question (StrategyQA)."""
    return f"Question: {question.strip()}\n\n{STEP_BY_STEP}, and put your final answer (yes or no) within \\boxed{{}}."


def entailment_prompt(premises: str, conclusion: str) -> str:
    """Three-way first-order-logic entailment (FOLIO)."""
    return (
        f"Premises:\n{premises.strip()}\n\n"
        f"Conclusion: {conclusion.strip()}\n\n"
        "Based only on the premises, is the conclusion True, False, or Uncertain? "
        f"{STEP_BY_STEP}, and put your final answer (True, False, or Uncertain) within \\boxed{{}}."
    )


def reading_prompt(passage: str, question: str) -> str:
    """Extractive/numeric reading comprehension (DROP)."""
    return (
        f"Passage: {passage.strip()}\n\n"
        f"Question: {question.strip()}\n\n"
        f"{STEP_BY_STEP}, and put your final answer (a number, a date, or a short span of text "
        "from the passage) within \\boxed{}."
    )
