r"""Graders: extract a model's final answer and compare it with the dataset's own gold field.

    >>> from kvexp.grading import grade
    >>> grade("gsm8k", "... so she makes \\boxed{18} dollars.", "... 9 * 2 = 18\n#### 18")
    ('18', True)

``grade`` is public and stable so old ``samples.jsonl`` files can be re-graded when a grader
improves: ``grade(row_dataset, row["output"], row["gold"])``.
"""

from kvexp.grading.chain import extract_chain
from kvexp.grading.choices import extract_choice, extract_folio, extract_yes_no
from kvexp.grading.drop import DROP_F1_THRESHOLD, drop_em_f1, normalize_drop_answer
from kvexp.grading.extract import last_boxed
from kvexp.grading.grader import ANSWER_KINDS, SUPPORTED_DATASETS, grade
from kvexp.grading.math_answers import extract_math, math_equal

__all__ = [
    "ANSWER_KINDS",
    "DROP_F1_THRESHOLD",
    "SUPPORTED_DATASETS",
    "drop_em_f1",
    "extract_chain",
    "extract_choice",
    "extract_folio",
    "extract_math",
    "extract_yes_no",
    "grade",
    "last_boxed",
    "math_equal",
    "normalize_drop_answer",
]
