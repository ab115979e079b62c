r"""The `read_once` task (`dataset=read_once`): every prompt fact is needed exactly once, in an order the
reply reveals only as it goes.

**Hypothesis it tests.** When the reply reaches a fact, no earlier query of the reply had a reason to
attend to it (the reply learns which variable comes next only from the link it has just read), so
attention accumulated so far (H2O) or paid by the last few queries (SnapKV-D, R-KV) carries no signal
about which facts are still to come, and those policies should lose facts before they are read.
Pinning the prompt (`policy.protect_prompt=true`) keeps every fact and should rescue any policy that
keeps the line being written.

It is the `chain` task's table and lines, walked for exactly one lap: ``facts`` variables on one cycle and
``steps = facts``, so the walk visits every variable once and reads its value and its link once
(`kvexp.data.chain` describes the table, the lines and the grading)::

    facts: k=2 k>d d=4 d>h h=7 h>b b=1 b>k
    start at d and take 4 steps. add the values mod 10. put the final answer in \boxed{}.

    4:d=4,d>h,0+4=4
    3:h=7,h>b,4+7=1
    2:b=1,b>k,1+1=2
    1:k=2,k>d,2+2=4
    \boxed{4}

``distractors`` adds variables that are never read. The default (14 facts, no distractor) gives a
62-token prompt (`chain`'s default has 63) and a ~205-token reply; the prompt grows by 2 tokens per
fact, so a longer walk would make the prompt outgrow a pinned budget first (at B=128, H2O's window of
64 leaves 63 slots for a pinned prompt).
"""

from __future__ import annotations

import random

from kvexp.data import chain, synthetic
from kvexp.data.problem import Problem
from kvexp.data.synthetic import MOD, check_int

TASK = "read_once"


def check_knobs(facts: int, distractors: int) -> None:
    check_int(TASK, "facts", facts, 1)
    chain.check_knobs(facts, facts, distractors, TASK)


def make_problem(seed: int, facts: int = 14, distractors: int = 0) -> tuple[str, str, str]:
    """(question, reference trace, answer) of this seed and these knobs (a pure function of its arguments)."""
    check_knobs(facts, distractors)
    rng = random.Random(f"kvexp-{TASK}:{seed}:{facts}:{distractors}")
    table = chain.draw_table(rng, facts, distractors)
    question = (
        f"facts: {table.text()}\nstart at {table.start} and take {facts} steps. add the values mod {MOD}. "
        "put the final answer in \\boxed{}."
    )
    lines, total = table.walk(facts)
    return question, "\n".join(lines) + f"\n\\boxed{{{total}}}", str(total)


def load_read_once_problems(
    limit: int | None = 100, seed: int = 0, facts: int = 14, distractors: int = 0, split: str = "test"
) -> list[Problem]:
    """`limit` problems (100 when None) for `dataset=read_once`; test and train seeds are disjoint."""
    check_knobs(facts, distractors)
    knobs = {"facts": facts, "distractors": distractors}
    return synthetic.make_problems(TASK, lambda ps: make_problem(ps, facts, distractors), limit, seed, split, knobs)
