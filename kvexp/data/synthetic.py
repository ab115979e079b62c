"""What the generated tasks (`chain`, `recall`, `read_once`, `local_state`) share: seeds per split, knob
checks and the making of `Problem`s.

Every task makes problem ``i`` of base seed ``s`` from its own seed (`problem_seed`): test seeds are
``s * 10**6 + i`` (``s, i < 10**6``) and every train seed is ``>= 2**48``, so no test problem is ever a
training problem. A task's random generator is keyed by the task's name, the seed and the knobs, so
problems are a function of their arguments on any platform (pure Python, no torch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kvexp.data.problem import Problem
from kvexp.errors import ConfigError

MOD = 10
SPLITS = ("test", "train")

# Seeds of the two splits live in disjoint ranges: test problem i of base seed s has seed
# s * 10**6 + i (s, i < 10**6); every train seed is >= TRAIN_SEED_OFFSET.
SPLIT_STRIDE = 10**6
TRAIN_SEED_OFFSET = 2**48

INSTRUCTION = "reason step by step and put the final answer in \\boxed{}."


def check_int(task: str, name: str, value: Any, low: int, high: int | None = None) -> None:
    """Refuse a knob that is not an integer in [low, high], naming the task and the knob."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{task} task: {name} must be an integer >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{task} task: {name} must be <= {high}, got {value}")


def problem_seed(split: str, seed: int, index: int, task: str = "chain") -> int:
    """The seed of problem `index` of `split` for base seed `seed` (disjoint ranges per split)."""
    if split not in SPLITS:
        raise ConfigError(f"{task} task: split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not 0 <= index < SPLIT_STRIDE or not 0 <= seed < SPLIT_STRIDE:
        raise ConfigError(f"{task} task: seed and index must lie in [0, {SPLIT_STRIDE}), got {seed}, {index}")
    base = seed * SPLIT_STRIDE + index
    return base if split == "test" else TRAIN_SEED_OFFSET + base


def problem_id(task: str, split: str, seed: int, index: int, knobs: Mapping[str, int]) -> str:
    """``<task>-<first letter of each knob><value>...-<split><seed>-<index>``, e.g. ``chain-s20f8d4-test0-3``."""
    tag = "".join(f"{name[0]}{value}" for name, value in knobs.items())
    return f"{task}-{tag}-{split}{seed}-{index}"


def make_problems(
    task: str,
    make: Callable[[int], tuple[str, str, str]],
    limit: int | None,
    seed: int,
    split: str,
    knobs: Mapping[str, int],
) -> list[Problem]:
    """The first `limit` problems (100 when None) of `task` for base seed `seed`, as `Problem`s.

    ``make(problem_seed)`` returns (question, reference trace, answer); ``gold`` is the answer, ``meta``
    holds the knobs, the problem's own seed and the reference trace."""
    n = 100 if limit is None else limit
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"{task} task: limit must be a positive integer or None, got {limit!r}")
    problems = []
    for i in range(n):
        ps = problem_seed(split, seed, i, task)
        question, trace, answer = make(ps)
        meta = {"dataset": task, "split": split, "index": i, "seed": seed, "problem_seed": ps, **knobs}
        meta["reference_trace"] = trace
        problems.append(Problem(id=problem_id(task, split, seed, i, knobs), question=question, gold=answer, meta=meta))
    return problems
