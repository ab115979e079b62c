r"""The `local_state` task (`dataset=local_state`): every line of the reply depends on the line before it
alone, and after the first line nothing in the prompt is needed.

**Hypothesis it tests.** Any policy that keeps a recent window keeps everything this task needs (the
last line, ~9 tokens) and should match the full cache at any budget; a policy without a recent window
(TOVA, K-Norm, KeyDiff, TriAttention at their defaults) scores tokens by something other than recency
and may evict the line being continued, so it should not. Pinning the prompt should change nothing
here: after the first line the prompt is dead weight (and a pinned prompt only takes slots from the
window).

The prompt gives a pair of digits; each line adds the last two numbers mod 10 (a Fibonacci sequence
mod 10) under a countdown of the steps left, and the last sum is boxed::

    pair: 3 8
    take 5 steps. add the last two mod 10. reason step by step and put the final answer in \boxed{}.

    5:3+8=1
    4:8+1=9
    3:1+9=0
    2:9+0=9
    1:0+9=9
    \boxed{9}

Line ``k`` reads the previous line's countdown, second operand and sum, nothing older. A wrong digit
anywhere changes every later sum, so the answer is right only if the whole chain of lines is. The pair
(0, 0) is never drawn (its sequence is all zeros), so a step count has 99 problems: test and train
problems come from disjoint seeds but repeat one another; what a problem tests is the rule (adding the
last two digits mod 10) and the cache, not a memory of the problem. A line is 8-9 tokens of the organism's tokenizer:
the default 36 steps give a ~38-token prompt and a ~330-token reply.
"""

from __future__ import annotations

import random

from kvexp.data import synthetic
from kvexp.data.problem import Problem
from kvexp.data.synthetic import INSTRUCTION, MOD, check_int

TASK = "local_state"


def check_knobs(steps: int) -> None:
    check_int(TASK, "steps", steps, 1, 99)  # two-digit countdown


def draw_pair(rng: random.Random) -> tuple[int, int]:
    """Two digits, not both 0."""
    while True:
        a, b = rng.randrange(MOD), rng.randrange(MOD)
        if a or b:
            return a, b


def pair_lines(a: int, b: int, steps: int) -> tuple[list[str], int]:
    """The lines ``left:a+b=c`` from the pair (a, b) for `steps` steps, and the last sum."""
    lines = []
    for left in range(steps, 0, -1):
        c = (a + b) % MOD
        lines.append(f"{left}:{a}+{b}={c}")
        a, b = b, c
    return lines, b


def make_problem(seed: int, steps: int = 36) -> tuple[str, str, str]:
    """(question, reference trace, answer) of this seed and knob (a pure function of its arguments)."""
    check_knobs(steps)
    rng = random.Random(f"kvexp-{TASK}:{seed}:{steps}")
    a, b = draw_pair(rng)
    question = f"pair: {a} {b}\ntake {steps} steps. add the last two mod {MOD}. {INSTRUCTION}"
    lines, last = pair_lines(a, b, steps)
    return question, "\n".join(lines) + f"\n\\boxed{{{last}}}", str(last)


def load_local_state_problems(
    limit: int | None = 100, seed: int = 0, steps: int = 36, split: str = "test"
) -> list[Problem]:
    """`limit` problems (100 when None) for `dataset=local_state`; test and train seeds are disjoint."""
    check_knobs(steps)
    return synthetic.make_problems(TASK, lambda ps: make_problem(ps, steps), limit, seed, split, {"steps": steps})
