"""kvexp: how KV-cache eviction changes what a reasoning model can do at a fixed memory budget."""

__version__ = "0.1.0"


def grade(dataset, response, gold):
    """Public grader: `grade(dataset, response, gold) -> (prediction, correct)` (see kvexp.grading)."""
    from kvexp.grading import grade as _grade

    return _grade(dataset, response, gold)
