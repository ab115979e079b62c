"""The model organism (kvexp.organism): the chain task generator, its tokenizer, the training entry
point and the committed checkpoint's full-cache accuracy."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch

from kvexp.data import chain as task
from kvexp.data.chain import load_chain_problems, make_problem
from kvexp.data.problem import Problem
from kvexp.errors import ConfigError
from kvexp.grading.chain import grade_chain
from kvexp.organism import CHECKPOINT_DIR

VALUE = re.compile(r" ([a-z])=(\d)")
LINK = re.compile(r" ([a-z])>([a-z])")
LINE = re.compile(r"^(\d+):([a-z])=(\d),([a-z])>([a-z]),(\d)\+(\d)=(\d)$")


def read_facts(question: str) -> dict[str, tuple[int, str]]:
    """{variable: (value, link)} from the question's first line."""
    table_line = question.split("\n", 1)[0]
    assert table_line.startswith("facts: ")
    values, links = VALUE.findall(table_line), LINK.findall(table_line)
    assert len({v for v, _ in values}) == len(values) == len(links) == len({v for v, _ in links})
    links = dict(links)
    return {v: (int(x), links[v]) for v, x in values}


def independent_answer(question: str) -> tuple[str, list[tuple[str, int]]]:
    """Re-read the question from its text alone and walk the facts: (answer, visited (var, value))."""
    facts = read_facts(question)
    rest = question.split("\n", 1)[1]
    start, steps = re.search(r"start at ([a-z]) and take (\d+) steps", rest).groups()
    modulus = int(re.search(r"mod (\d+)", rest).group(1))
    visited, total, var = [], 0, start
    for _ in range(int(steps)):
        value, link = facts[var]
        visited.append((var, value))
        total = (total + value) % modulus
        var = link
    return str(total), visited


def check_trace(question: str, trace: str, answer: str) -> None:
    """Every line of the trace is a correct step: countdown, the fact as stated in the question, the
    running sum carried from the line before, and the boxed answer."""
    facts = read_facts(question)
    expected, visited = independent_answer(question)
    *lines, boxed = trace.split("\n")
    assert boxed == f"\\boxed{{{expected}}}" and answer == expected
    assert len(lines) == len(visited)
    previous_sum, previous_link = 0, visited[0][0]
    for i, line in enumerate(lines):
        m = LINE.match(line)
        assert m, line
        left, var, value, var_again, link, prev, added, new = m.groups()
        assert int(left) == len(lines) - i
        assert var == var_again == previous_link == visited[i][0]
        assert (int(value), link) == facts[var]
        assert int(prev) == previous_sum and int(added) == int(value)
        assert int(new) == (previous_sum + int(value)) % 10
        previous_sum, previous_link = int(new), link


# ------------------------------------------------------------------------------------------ generator


def test_generator_is_deterministic_per_seed():
    a = make_problem(123, 20, 8, 4)
    assert a == make_problem(123, 20, 8, 4)
    assert make_problem(124, 20, 8, 4) != a
    assert [p.to_dict() for p in load_chain_problems(5, seed=3)] == [
        p.to_dict() for p in load_chain_problems(5, seed=3)
    ]
    # a problem does not depend on how many others are drawn with it
    assert load_chain_problems(3, seed=3)[2] == load_chain_problems(9, seed=3)[2]


@pytest.mark.parametrize("steps,facts,distractors", [(20, 8, 4), (1, 1, 0), (40, 3, 10), (7, 20, 6), (2, 12, 0)])
def test_independent_evaluator_agrees_with_the_traces(steps, facts, distractors):
    for seed in range(40):
        p = make_problem(seed, steps, facts, distractors)
        check_trace(p.question, p.trace, p.answer)
        assert len(read_facts(p.question)) == facts + distractors
        assert grade_chain(p.trace, p.answer) == (p.answer, True)


def test_answers_are_not_degenerate():
    answers = [make_problem(s, 20, 8, 4).answer for s in range(500)]
    counts = {d: answers.count(d) for d in set(answers)}
    assert set(counts) == set("0123456789") and max(counts.values()) < 100


def test_trace_length_is_controlled_by_steps():
    from kvexp.organism.tokenizer import build_tokenizer

    tok = build_tokenizer()
    lengths = {s: len(tok(make_problem(0, s, 8, 4).trace)["input_ids"]) for s in (2, 20, 40)}
    assert 20 <= lengths[2] <= 50 and 250 <= lengths[20] <= 350 and 550 <= lengths[40] <= 650


def test_problem_list_matches_the_data_layer():
    problems = load_chain_problems(20, seed=0, steps=6, facts=5, distractors=2)
    assert all(isinstance(p, Problem) for p in problems)
    assert len({p.id for p in problems}) == 20
    p = problems[0]
    assert p.id.startswith("chain-") and p.gold == grade_chain(p.meta["reference_trace"], p.gold)[0]
    assert p.question.endswith("put the final answer in \\boxed{}.")
    json.dumps([q.to_dict() for q in problems])
    train = load_chain_problems(20, seed=0, steps=6, facts=5, distractors=2, split="train")
    assert {p.meta["problem_seed"] for p in train}.isdisjoint(p.meta["problem_seed"] for p in problems)
    assert min(p.meta["problem_seed"] for p in train) >= task.TRAIN_SEED_OFFSET > task.SPLIT_STRIDE**2


def test_bad_knobs_are_refused_with_the_reason():
    with pytest.raises(ConfigError, match="only 26 variable names"):
        make_problem(0, 5, 20, 10)
    with pytest.raises(ConfigError, match="steps must be an integer >= 1"):
        load_chain_problems(5, steps=0)
    with pytest.raises(ConfigError, match="split must be one of"):
        load_chain_problems(5, split="dev")


def test_problems_are_those_every_earlier_version_generated():
    """The problems of a seed never change (results of old sweeps stay comparable): a digest of
    two seeds' test and train problems, taken when the task moved from kvexp.organism to kvexp.data."""
    digest = hashlib.sha256()
    for split in ("test", "train"):
        for p in load_chain_problems(100, seed=0, steps=20, facts=8, distractors=4, split=split) + load_chain_problems(
            30, seed=5, steps=3, facts=2, distractors=1, split=split
        ):
            digest.update(json.dumps([p.id, p.question, p.gold, p.meta], sort_keys=True).encode())
    assert digest.hexdigest() == "8105181d7ce4952339c6e93267cce7f631d9158202bf576a10befd498c2c2e7f"


def test_grading_is_exact_on_the_last_box():
    assert grade_chain("1:a=3,a>a,0+3=3\n\\boxed{3}", "3") == ("3", True)
    assert grade_chain("\\boxed{3} ... \\boxed{4}", "3") == ("4", False)
    assert grade_chain("no answer", "3") == (None, False)
    assert grade_chain("\\boxed{03}", "3") == ("03", False)


# ------------------------------------------------------------------------------------------ tokenizer


def test_chat_template_round_trips_to_the_training_ids():
    from kvexp.organism.tokenizer import build_tokenizer, training_text

    tok = build_tokenizer()
    for seed in range(20):
        p = make_problem(seed, 1 + seed, 1 + seed % 12, seed % 5)
        text = tok.apply_chat_template(
            [{"role": "user", "content": p.question}], tokenize=False, add_generation_prompt=True
        )
        prompt, completion = training_text(p.question, p.trace)
        assert text == prompt
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids and tok.decode(ids) == text
        out = tok(completion, add_special_tokens=False)["input_ids"]
        assert out[-1] == tok.eos_token_id and tok.decode(out, skip_special_tokens=True) == p.trace


# ------------------------------------------------------------------------------------------- training


def test_training_entry_point_runs_and_its_loss_falls(tmp_path):
    from kvexp.organism.train import main

    log = tmp_path / "ckpt"
    main(
        [
            "--max-steps",
            "24",
            "--layers",
            "1",
            "--hidden",
            "32",
            "--intermediate",
            "64",
            "--batch-size",
            "8",
            "--warmup",
            "4",
            "--lr",
            "1e-2",
            "--log-every",
            "4",
            "--eval-problems",
            "0",
            "--steps-short",
            "1",
            "4",
            "--steps-long",
            "5",
            "6",
            "--facts",
            "1",
            "4",
            "--distractors",
            "0",
            "2",
            "--out",
            str(log),
        ]
    )
    record = json.loads((log / "TRAINING.json").read_text())
    losses = [r["loss"] for r in record["losses"]]
    assert len(losses) == 6 and losses[-1] < 0.8 * losses[0]
    assert record["command"].startswith("python -m kvexp.organism.train") and record["config"]["seed"] == 0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoModelForCausalLM.from_pretrained(str(log)).config.num_key_value_heads == 2
    assert AutoTokenizer.from_pretrained(str(log)).chat_template


def test_training_is_seeded():
    from kvexp.organism.train import TrainConfig, train

    cfg = dict(
        max_steps=3,
        layers=1,
        hidden=16,
        intermediate=32,
        batch_size=4,
        warmup=1,
        log_every=1,
        eval_problems=0,
        steps_short=(1, 3),
        steps_long=(4, 4),
        facts=(1, 3),
        distractors=(0, 1),
    )
    a, b = train(TrainConfig(**cfg), None, log=lambda *_: None), train(TrainConfig(**cfg), None, log=lambda *_: None)
    assert a["losses"] == b["losses"]
    assert all(torch.equal(x, y) for x, y in zip(a["model"].state_dict().values(), b["model"].state_dict().values()))


# ---------------------------------------------------------------------------------- the checkpoint


def test_committed_checkpoint_is_small_and_documented():
    files = {p.name: p.stat().st_size for p in CHECKPOINT_DIR.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "TRAINING.json"} <= set(files)
    assert sum(files.values()) < 8 * 2**20
    record = json.loads((CHECKPOINT_DIR / "TRAINING.json").read_text())
    assert {"command", "config", "final_loss", "train_s", "torch"} <= set(record)
    config = json.loads((CHECKPOINT_DIR / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_attention_heads"] > config["num_key_value_heads"] > 1


@pytest.fixture(scope="module")
def organism():
    from kvexp.organism.evaluate import load_organism

    torch.set_num_threads(2)
    return load_organism()


def test_committed_tokenizer_gives_the_training_ids(organism):
    from kvexp.organism.evaluate import prompt_ids
    from kvexp.organism.train import encode_example

    _, tokenizer = organism
    p = make_problem(5, 9, 6, 3)
    ids, labels = encode_example(tokenizer, p.question, p.trace)
    prompt = prompt_ids(tokenizer, p.question)
    assert ids[: len(prompt)] == prompt and labels[len(prompt)] != -100 and labels[len(prompt) - 1] == -100
    assert tokenizer.eos_token_id == ids[-1]


@pytest.mark.parametrize("task", ["chain", "recall", "read_once", "local_state"])
def test_committed_checkpoint_solves_fresh_problems_at_full_cache(organism, task):
    from kvexp.data import load_problems
    from kvexp.organism.evaluate import run_cell

    # base seed 7: problems neither the training nor the README's tables used
    problems = load_problems(task, limit=48, seed=7)
    result = run_cell(*organism, problems, "full", None, batch_size=16)
    assert result["errors"] == 0
    assert result["accuracy"] >= 0.95, result


def test_eviction_hurts_depending_on_the_policy(organism):
    """The testbed's point, at a budget of about half the sequence: H2O keeps the facts table the walk
    comes back to and stays accurate, StreamingLLM loses it and falls to about chance (README, "The
    organism suite"; at B=128 H2O loses it too unless the prompt is pinned)."""
    from kvexp.organism.evaluate import run_cell

    problems = load_chain_problems(32, seed=7, steps=20, facts=8, distractors=4)
    h2o = run_cell(*organism, problems, "h2o", 192, batch_size=16)["accuracy"]
    streaming = run_cell(*organism, problems, "streaming_llm", 192, batch_size=16)["accuracy"]
    assert h2o >= 0.75 and streaming <= 0.3, (h2o, streaming)
