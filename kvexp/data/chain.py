r"""The `chain` task (`dataset=chain`), the model organism's: a synthetic reasoning problem whose answer
needs facts stated early in the prompt and intermediate results written earlier in the trace.

A problem is a table of variable facts and a walk through it. For each variable the table states
its value (``d=4``) and its link (``d>h``: from ``d`` go on to ``h``). The ``facts`` variables that the
walk can reach form one cycle, in a random order; ``distractors`` more variables link into it but are
never reached. The question names a start variable and a number of ``steps``; the answer is the sum
of the values of the variables visited, mod 10::

    facts: k=2 k>d d=4 d>h q=9 q>h h=7 h>b b=1 b>d
    start at d and take 5 steps. add the values mod 10. reason step by step and put the final answer in \boxed{}.

The trace does one line per step: a countdown of the steps left, the current variable's value and
link looked up in the table, then the running sum (the previous line's sum, plus the value, mod 10);
the last line's sum is boxed::

    5:d=4,d>h,0+4=4
    4:h=7,h>b,4+7=1
    3:b=1,b>d,1+1=2
    2:d=4,d>h,2+4=6
    1:h=7,h>b,6+7=3
    \boxed{3}

So every step looks up two prompt facts (early tokens, needed again each time the walk comes round
the cycle) and reuses the running sum and the link written in the line before. A wrong value
anywhere changes the answer (adding mod 10 is a bijection in each argument), so a guess scores 10%.
A line is 14-15 tokens of the organism's tokenizer, so ``steps`` sets the trace length: 2 steps ~ 35
tokens, 20 steps ~ 300, 40 steps ~ 600. The prompt is 35 tokens plus 2 per fact.

Everything here is pure Python (``random.Random``), so problems are a function of their seed on any
platform; nothing imports torch. The grader is `kvexp.grading.chain`; the model trained on the task
is `model=organism` (trained by `kvexp.organism.train`).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from kvexp.data import synthetic
from kvexp.data.problem import Problem
from kvexp.data.synthetic import INSTRUCTION, MOD, SPLIT_STRIDE, SPLITS, TRAIN_SEED_OFFSET, check_int
from kvexp.errors import ConfigError

VARIABLES = string.ascii_lowercase  # one token each
MAX_VARIABLES = len(VARIABLES)

# the split constants and the instruction live in kvexp.data.synthetic (shared by every generated task)
__all__ = [
    "INSTRUCTION",
    "MAX_VARIABLES",
    "MOD",
    "SPLITS",
    "SPLIT_STRIDE",
    "TRAIN_SEED_OFFSET",
    "ChainProblem",
    "Table",
    "check_knobs",
    "draw_table",
    "load_chain_problems",
    "make_problem",
    "problem_seed",
]


@dataclass(frozen=True)
class ChainProblem:
    """One generated problem: the user message, the reference trace (the assistant's reply, answer
    included) and the answer (one digit, as a string)."""

    question: str
    trace: str
    answer: str
    seed: int
    steps: int
    facts: int
    distractors: int

    def __iter__(self):  # question, trace, answer = make_problem(...)
        return iter((self.question, self.trace, self.answer))


def check_knobs(steps: int, n_facts: int, n_distractors: int, task: str = "chain") -> None:
    check_int(task, "steps", steps, 1, 99)  # two-digit countdown
    check_int(task, "facts", n_facts, 1)
    check_int(task, "distractors", n_distractors, 0)
    if n_facts + n_distractors > MAX_VARIABLES:
        raise ConfigError(
            f"{task} task: facts + distractors = {n_facts + n_distractors} but there are only "
            f"{MAX_VARIABLES} variable names (a-z); lower dataset.facts or dataset.distractors"
        )


@dataclass(frozen=True)
class Table:
    """A drawn fact table: each variable's value and link, the order the prompt states them in, and
    the start of the walk (on the cycle)."""

    value: dict[str, int]
    link: dict[str, str]
    order: list[str]
    start: str

    def text(self) -> str:
        """The prompt's facts, ``k=2 k>d d=4 d>h ...``."""
        return " ".join(f"{v}={self.value[v]} {v}>{self.link[v]}" for v in self.order)

    def walk(self, steps: int) -> tuple[list[str], int]:
        """The trace's lines for `steps` steps from the start (countdown, value, link, running sum) and the sum."""
        lines, total, var = [], 0, self.start
        for left in range(steps, 0, -1):
            new = (total + self.value[var]) % MOD
            lines.append(f"{left}:{var}={self.value[var]},{var}>{self.link[var]},{total}+{self.value[var]}={new}")
            total, var = new, self.link[var]
        return lines, total


def draw_table(rng: random.Random, n_facts: int, n_distractors: int, letters: str = VARIABLES) -> Table:
    """`n_facts` variables (named from `letters`) on one cycle in a random order and `n_distractors` that
    link into it (or to an earlier distractor) but are never reached from it; values uniform in 0-9."""
    names = rng.sample(letters, n_facts + n_distractors)
    cycle, others = names[:n_facts], names[n_facts:]
    value = {v: rng.randrange(MOD) for v in names}
    link = {cycle[i]: cycle[(i + 1) % n_facts] for i in range(n_facts)}
    for j, v in enumerate(others):
        # a distractor links into the cycle or to an earlier distractor: never reached from the cycle
        link[v] = rng.choice(cycle + others[:j])
    order = list(names)
    rng.shuffle(order)
    return Table(value, link, order, rng.choice(cycle))


def make_problem(seed: int, steps: int = 20, n_facts: int = 8, n_distractors: int = 4) -> ChainProblem:
    """The problem of this seed and these knobs (a pure function of its arguments)."""
    check_knobs(steps, n_facts, n_distractors)
    rng = random.Random(f"kvexp-chain:{seed}:{steps}:{n_facts}:{n_distractors}")
    table = draw_table(rng, n_facts, n_distractors)
    question = (
        f"facts: {table.text()}\nstart at {table.start} and take {steps} steps. add the values mod {MOD}. {INSTRUCTION}"
    )
    lines, total = table.walk(steps)
    answer = str(total)
    trace = "\n".join(lines) + f"\n\\boxed{{{answer}}}"
    return ChainProblem(question, trace, answer, seed, steps, n_facts, n_distractors)


def problem_seed(split: str, seed: int, index: int) -> int:
    """The seed of problem `index` of `split` for base seed `seed` (disjoint ranges per split)."""
    return synthetic.problem_seed(split, seed, index, "chain")


def load_chain_problems(
    limit: int | None = 100, seed: int = 0, steps: int = 20, facts: int = 8, distractors: int = 4, split: str = "test"
) -> list[Problem]:
    """`limit` problems (100 when None) as `Problem`s, for `dataset=chain`.

    ``gold`` is the answer digit as a string; ``meta`` holds the knobs, the problem's own seed and the
    reference trace. Test and train problems come from disjoint seed ranges (see `problem_seed`).
    """
    check_knobs(steps, facts, distractors)
    knobs = {"steps": steps, "facts": facts, "distractors": distractors}
    return synthetic.make_problems(
        "chain", lambda ps: make_problem(ps, steps, facts, distractors), limit, seed, split, knobs
    )
