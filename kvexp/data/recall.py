r"""The `recall` task (`dataset=recall`): a value the reply computes early, and which the prompt never
states, is needed again only at the end, after many lines that never read it.

**Hypothesis it tests.** The value lives in one line of the reply (the memo); between it and the end,
~24 lines work on something else, so no query attends to it and a policy must keep it for its own sake.
Attention-based scores (H2O, SnapKV-D, TOVA) give it nothing to go on, a recent window has long passed
it, and pinning the prompt cannot help because the value is not in the prompt (it is the sum of a walk
over the prompt's facts, several lookups and additions away from any one prompt token). This is the
passcode probe of Random Attention (arXiv 2609.03430, Table 3) in miniature.

The prompt has a small fact table (as in `chain`), the name of the memo and a pair of digits. The reply
first walks the table for one lap (``walk`` steps, `chain`'s lines) and writes the sum under the memo's
name (``memo:m=4``); then it runs ``steps`` lines of `local_state` from the pair, none of which read
the memo; the last line names the memo again (``m=``, a token no other line has) and copies its value,
adds it to the last sum, and that is boxed (the question is one line, wrapped here)::

    facts: k=2 k>d d=4 d>h h=7 h>b b=1 b>k
    start at d and take 4 steps. memo the sum as m. then take 3 steps from 5 9 and add m. put the final
    answer in \boxed{}.

    4:d=4,d>h,0+4=4
    3:h=7,h>b,4+7=1
    2:b=1,b>k,1+1=2
    1:k=2,k>d,2+2=4
    memo:m=4
    3:5+9=4
    2:9+4=3
    1:4+3=7
    m=4,4+7=1
    \boxed{1}

The memo's name is a letter that names no fact of the table. (The memo is written with the tokens a
`chain` line writes, ``m=`` and a digit: written as a fact token like the prompt's `` m=4``, which the
organism only ever reads, it was never learned: 0 of 64 held-out problems after 5500 steps.)
A wrong memo (or any wrong line) changes the answer, so a guess scores 10%. The default (a 4-step
walk, 2 distractors, 24 steps) gives a ~60-token prompt and a ~280-token reply, the memo ~220 tokens
before it is read again.
"""

from __future__ import annotations

import random

from kvexp.data import chain, local_state, synthetic
from kvexp.data.problem import Problem
from kvexp.data.synthetic import MOD, check_int

TASK = "recall"


def check_knobs(walk: int, steps: int, distractors: int) -> None:
    check_int(TASK, "walk", walk, 1)
    chain.check_knobs(walk, walk, distractors + 1, TASK)  # one letter names the memo
    check_int(TASK, "steps", steps, 1, 99)


def make_problem(seed: int, walk: int = 4, steps: int = 24, distractors: int = 2) -> tuple[str, str, str]:
    """(question, reference trace, answer) of this seed and these knobs (a pure function of its arguments)."""
    check_knobs(walk, steps, distractors)
    rng = random.Random(f"kvexp-{TASK}:{seed}:{walk}:{steps}:{distractors}")
    memo = rng.choice(chain.VARIABLES)
    table = chain.draw_table(rng, walk, distractors, chain.VARIABLES.replace(memo, ""))
    a, b = local_state.draw_pair(rng)
    question = (
        f"facts: {table.text()}\nstart at {table.start} and take {walk} steps. memo the sum as {memo}. "
        f"then take {steps} steps from {a} {b} and add {memo}. put the final answer in \\boxed{{}}."
    )
    walk_lines, total = table.walk(walk)
    pair_lines, last = local_state.pair_lines(a, b, steps)
    answer = (total + last) % MOD
    lines = [*walk_lines, f"memo:{memo}={total}", *pair_lines, f"{memo}={total},{total}+{last}={answer}"]
    return question, "\n".join(lines) + f"\n\\boxed{{{answer}}}", str(answer)


def load_recall_problems(
    limit: int | None = 100, seed: int = 0, walk: int = 4, steps: int = 24, distractors: int = 2, split: str = "test"
) -> list[Problem]:
    """`limit` problems (100 when None) for `dataset=recall`; test and train seeds are disjoint."""
    check_knobs(walk, steps, distractors)
    knobs = {"walk": walk, "steps": steps, "distractors": distractors}
    return synthetic.make_problems(
        TASK, lambda ps: make_problem(ps, walk, steps, distractors), limit, seed, split, knobs
    )
