"""The organism suite's generated tasks beside `chain` (kvexp.data.recall, read_once, local_state): each
exercises the access pattern its docstring claims, at the size the budgets need, from seeds whose
train and test ranges never meet. Pure Python (plus the organism's tokenizer); no model runs."""

from __future__ import annotations

import re

import pytest

from kvexp.data import GENERATED, load_problems, local_state, read_once, recall, synthetic
from kvexp.data.registry import CATEGORIES
from kvexp.errors import ConfigError
from kvexp.grading import grade

NEW_TASKS = ("recall", "read_once", "local_state")
MAKE = {"recall": recall.make_problem, "read_once": read_once.make_problem, "local_state": local_state.make_problem}

CHAIN_LINE = re.compile(r"^(\d+):([a-z])=(\d),([a-z])>([a-z]),(\d)\+(\d)=(\d)$")
PAIR_LINE = re.compile(r"^(\d+):(\d)\+(\d)=(\d)$")
VALUE = re.compile(r" ([a-z])=(\d)")
LINK = re.compile(r" ([a-z])>([a-z])")


def facts_of(question: str) -> tuple[dict[str, int], dict[str, str]]:
    table = question.split("\n", 1)[0]
    assert table.startswith("facts: ")
    return {v: int(d) for v, d in VALUE.findall(table)}, dict(LINK.findall(table))


def pair_chain(a: int, b: int, lines: list[str], top: int) -> int:
    """Check `lines` as local-state lines from (a, b) counting down from `top`, each reading only the
    line before it; return the last sum."""
    for i, line in enumerate(lines):
        m = PAIR_LINE.match(line)
        assert m, line
        left, x, y, z = map(int, m.groups())
        assert (left, x, y) == (top - i, a, b), (line, a, b)  # its inputs: the previous line's y and z
        assert z == (x + y) % 10
        a, b = y, z
    return b


# ------------------------------------------------------------------------------------- local_state


def test_local_state_lines_read_only_the_line_before():
    for seed in range(60):
        question, trace, answer = local_state.make_problem(seed, 36)
        a, b = map(int, re.match(r"pair: (\d) (\d)\n", question).groups())
        assert (a, b) != (0, 0)
        *lines, boxed = trace.split("\n")
        assert len(lines) == 36 and boxed == f"\\boxed{{{answer}}}"
        assert str(pair_chain(a, b, lines, 36)) == answer  # the first line reads the prompt's pair
        # after the first line the prompt is not needed: any line alone determines the rest and the answer
        k = seed % 35 + 1
        _, x, y, z = map(int, PAIR_LINE.match(lines[k - 1]).groups())
        assert str(pair_chain(y, z, lines[k:], 36 - k)) == answer


# ----------------------------------------------------------------------------------------- read_once


def test_read_once_reads_every_fact_exactly_once_in_an_order_the_reply_reveals():
    for seed in range(60):
        facts, distractors = (14, 0) if seed % 2 else (9, 3)
        question, trace, answer = read_once.make_problem(seed, facts, distractors)
        value, link = facts_of(question)
        assert len(value) == len(link) == facts + distractors
        *lines, boxed = trace.split("\n")
        assert boxed == f"\\boxed{{{answer}}}" and len(lines) == facts
        start = re.search(r"start at ([a-z]) and take (\d+) steps", question).group(1)
        read_value, read_link, expected, total = [], [], start, 0
        for i, line in enumerate(lines):
            left, var, val, var2, nxt, prev, added, new = CHAIN_LINE.match(line).groups()
            # the variable of this line is the link the line before read: the order is revealed as the reply goes
            assert var == var2 == expected and int(left) == facts - i
            assert int(val) == value[var] and nxt == link[var]
            assert (int(prev), int(added), int(new)) == (total, value[var], (total + value[var]) % 10)
            read_value.append(var)
            read_link.append(var)
            expected, total = nxt, int(new)
        assert str(total) == answer
        # every fact on the walk read exactly once, the distractors never
        walked = set(read_value)
        assert len(read_value) == len(walked) == facts and len(read_link) == len(set(read_link)) == facts
        for var in value:
            assert trace.count(f"{var}={value[var]},") == (1 if var in walked else 0)
            assert trace.count(f"{var}>{link[var]},") == (1 if var in walked else 0)
        # before its line, a walked variable is named only once: by the link the line before read
        for i, var in enumerate(read_value[1:], start=1):
            before = "\n".join(lines[:i])
            assert before.count(var) == 1 and lines[i - 1].count(f">{var},") == 1


# -------------------------------------------------------------------------------------------- recall


def split_recall(trace: str, walk: int, steps: int) -> tuple[list[str], str, list[str], str, str]:
    *lines, boxed = trace.split("\n")
    assert len(lines) == walk + 1 + steps + 1
    return lines[:walk], lines[walk], lines[walk + 1 : walk + 1 + steps], lines[-1], boxed


def test_recall_needs_a_value_the_reply_computes_and_only_at_the_end():
    for seed in range(60):
        question, trace, answer = recall.make_problem(seed, 4, 24, 2)
        value, link = facts_of(question)
        walk_lines, memo_line, middle, last, boxed = split_recall(trace, 4, 24)
        # the memo is the walk's sum, written by the reply (several lookups and additions from the prompt)
        total, var = 0, re.search(r"start at ([a-z]) and take 4 steps", question).group(1)
        for line in walk_lines:
            assert CHAIN_LINE.match(line).group(2) == var
            total, var = (total + value[var]) % 10, link[var]
        name = re.search(r"memo the sum as ([a-z])\. ", question).group(1)
        assert memo_line == f"memo:{name}={total}"
        # no prompt token carries it: the memo's name is no fact of the table, and no fact of it is stated
        assert name not in value and name not in link and f"{name}=" not in question
        # the lines between never read it: they are the local-state chain of the prompt's pair alone
        a, b = map(int, re.search(rf"steps from (\d) (\d) and add {name}\.", question).groups())
        assert all(name not in line for line in middle)
        assert trace.count(f"{name}=") == 2  # written once, read once: its name is a key no other line has
        last_sum = pair_chain(a, b, middle, 24)
        # the last line reads it again, and the answer depends on it
        assert last == f"{name}={total},{total}+{last_sum}={(total + last_sum) % 10}"
        assert boxed == f"\\boxed{{{answer}}}" and answer == str((total + last_sum) % 10)


def test_recall_memo_cannot_be_read_off_any_prompt_position():
    """The memo's digit agrees with the digit at any one prompt position only about as often as chance
    (10%): the prompt states it nowhere, so a policy that pins the prompt still has to keep the memo."""
    rows = []
    for seed in range(400):
        question, trace, _ = recall.make_problem(seed, 4, 24, 2)
        memo = int(re.search(r"\nmemo:[a-z]=(\d)\n", trace).group(1))
        rows.append((memo, [int(c) for c in question if c.isdigit()]))
    width = min(len(digits) for _, digits in rows)
    for position in range(width):
        agree = sum(memo == digits[position] for memo, digits in rows) / len(rows)
        assert agree < 0.2, (position, agree)
    # and the memo is not degenerate
    memos = [memo for memo, _ in rows]
    assert set(memos) == set(range(10)) and max(memos.count(d) for d in range(10)) < 80


# ---------------------------------------------------------------------------------------- all tasks


@pytest.mark.parametrize("task", NEW_TASKS)
def test_default_size_makes_budgets_64_to_256_bite(task):
    """At the defaults (conf/dataset/<task>.yaml) a sequence is ~250-400 organism tokens with a prompt
    under 64: H2O's window at B=128 (64) plus a pinned prompt fit in B - 1 slots."""
    from kvexp.organism.tokenizer import build_tokenizer, training_text

    tok = build_tokenizer()
    for p in load_problems(task, limit=10):
        prompt, completion = training_text(p.question, p.meta["reference_trace"])
        n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
        n_reply = len(tok(completion, add_special_tokens=False)["input_ids"])
        assert n_prompt <= 63 and 250 <= n_prompt + n_reply <= 400, (n_prompt, n_reply)
        ids = tok(prompt + completion, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids and tok.decode(ids) == prompt + completion


@pytest.mark.parametrize("task", NEW_TASKS)
def test_generator_is_seeded_with_disjoint_train_and_test_seeds(task):
    spec = GENERATED[task]
    test = spec.generate(30, seed=2)
    assert [p.to_dict() for p in test] == [p.to_dict() for p in spec.generate(30, seed=2)]
    assert test[4] == spec.generate(5, seed=2)[4]  # a problem does not depend on how many are drawn
    assert len({p.id for p in test}) == 30
    train = spec.generate(30, seed=2, split="train")
    assert {p.meta["problem_seed"] for p in train}.isdisjoint(p.meta["problem_seed"] for p in test)
    assert min(p.meta["problem_seed"] for p in train) >= synthetic.TRAIN_SEED_OFFSET
    if task != "local_state":  # a table of facts: the problems themselves never meet
        assert len({p.question for p in test}) == 30
        assert {p.question for p in train}.isdisjoint(p.question for p in test)
    else:  # 99 pairs per step count, so problems repeat; what is tested is the rule, all a problem holds
        assert len({p.question for p in spec.generate(1000, seed=0)}) == 99
    assert all(p.id.startswith(f"{task}-") and p.meta["dataset"] == task for p in test)
    answers = [p.gold for p in spec.generate(300, seed=0)]
    assert set(answers) == set("0123456789") and max(answers.count(d) for d in set(answers)) < 60


@pytest.mark.parametrize("task", NEW_TASKS)
def test_registry_entry_grader_and_category(task):
    spec = GENERATED[task]
    assert CATEGORIES[task] == "Organism" and spec.category == "Organism"
    p = load_problems(task, limit=3, options={"split": "test"})[2]
    assert grade(task, p.meta["reference_trace"], p.gold) == (p.gold, True)
    wrong = str((int(p.gold) + 1) % 10)
    assert grade(task, f"...\\boxed{{{wrong}}}", p.gold) == (wrong, False)
    assert grade(task, "\\boxed{0" + p.gold + "}", p.gold)[1] is False  # exact: no normalisation
    with pytest.raises(ConfigError, match=f"dataset '{task}' has no setting"):
        load_problems(task, options={"stpes": 3})


@pytest.mark.parametrize(
    "task,knobs,match",
    [
        ("local_state", {"steps": 0}, "local_state task: steps must be an integer >= 1"),
        ("local_state", {"steps": 100}, "local_state task: steps must be <= 99"),
        ("read_once", {"facts": 20, "distractors": 7}, "read_once task: facts \\+ distractors = 27"),
        ("recall", {"walk": 20, "distractors": 6}, "recall task: facts \\+ distractors = 27"),
        ("recall", {"walk": 0}, "recall task: walk must be an integer >= 1"),
        ("read_once", {"facts": 0}, "read_once task: facts must be an integer >= 1"),
        ("recall", {"split": "dev"}, "recall task: split must be one of"),
    ],
)
def test_bad_knobs_are_refused_naming_the_task(task, knobs, match):
    with pytest.raises(ConfigError, match=match):
        load_problems(task, limit=2, options=knobs)
