"""Tests of the sweep report (kvexp.report) on synthetic job folders with hand-computed values."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import types
from pathlib import Path

import matplotlib.image
import pytest

from kvexp.data.registry import REPORT_ORDER, get_spec
from kvexp.pipeline.folder import scan_jsonl
from kvexp.report import ReportError, build_report
from kvexp.report.cli import main
from kvexp.report.layout import category_of
from kvexp.stats import (
    binomial_cdf_half,
    bootstrap_mean_interval,
    common_prefix_length,
    mcnemar_exact,
    wilson_interval,
)

try:  # tests/ may or may not become a package
    from tests import report_fixtures as fx
except ImportError:  # pragma: no cover
    import report_fixtures as fx

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def standard(tmp_path_factory):
    """The standard sweep's report, built once for the tests that only read it."""
    root = tmp_path_factory.mktemp("standard")
    sweep = fx.write_standard_sweep(root)
    return build_report([sweep], sweep / "report")


def _issues(result, kind):
    return [i for i in result.issues if i.kind == kind]


# ---------------------------------------------------------------- statistics against hand values


def test_wilson_hand_values():
    # 7/10: centre (0.7 + 3.841459/20) / 1.3841459 = 0.644493,
    # half-width 1.959964 * sqrt(0.021 + 3.841459/400) / 1.3841459 = 0.247716.
    lo, hi = wilson_interval(7, 10)
    assert lo == pytest.approx(0.396777, abs=2e-6)
    assert hi == pytest.approx(0.892209, abs=2e-6)
    # 0/10: lower bound exactly 0, upper z^2 / (n + z^2) = 3.8415 / 13.8415.
    assert wilson_interval(0, 10) == (0.0, pytest.approx(3.841459 / 13.841459, abs=1e-6))
    assert wilson_interval(10, 10)[1] == 1.0
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_mcnemar_exact_hand_values():
    # b=1, c=6: p = 2 * (C(7,0) + C(7,1)) / 2^7 = 2 * 8 / 128.
    assert mcnemar_exact(1, 6) == 0.125
    assert mcnemar_exact(6, 1) == 0.125
    assert mcnemar_exact(0, 5) == 2 / 32
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0  # 2 * 42/64 > 1 is capped
    # A larger case stays exact: P(X <= 10 | n=40) = sum C(40,k), k<=10, over 2^40.
    exact = sum(math.comb(40, k) for k in range(11)) / 2**40
    assert binomial_cdf_half(10, 40) == exact
    assert mcnemar_exact(10, 30) == pytest.approx(2 * exact, rel=1e-12)


def test_bootstrap_interval_is_reproducible_and_brackets_the_mean():
    values = [0.5, 1.0, 0.0, 0.5, 1.0, 0.25]
    a = bootstrap_mean_interval(values)
    assert a == bootstrap_mean_interval(values)  # fixed seed
    assert a[0] < sum(values) / len(values) < a[1]
    assert bootstrap_mean_interval([1.0, 1.0]) == (1.0, 1.0)


def test_common_prefix_length():
    assert common_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix_length([1, 2, 3], [1, 2, 3]) == 3
    assert common_prefix_length([], [1]) == 0


def test_categories():
    assert category_of("gsm8k") == category_of("math500") == "Math"
    assert category_of("folio") == "Logic"
    assert category_of("reclor") == "Reading"
    assert category_of("commonsenseqa") == "Commonsense"
    assert category_of("my_new_dataset") == "Other"
    # one definition: the data registry's, so AIME is Math and LogiQA Logic in the report too
    assert category_of("aime24") == category_of("aime25") == "Math"
    assert category_of("logiqa") == "Logic"
    for name in REPORT_ORDER:
        assert category_of(name) == get_spec(name).category
    assert category_of("recall") == category_of("chain") == "Organism"


# ---------------------------------------------------------------- table values of the standard sweep


def test_accuracy_table(standard):
    t = standard.table("accuracy", "gsm8k")
    assert t.columns == ["B=128", "B=256"]
    assert [r.label for r in t.rows] == ["full", "h2o", "tova", "snapkv"]  # the registry's order
    assert t.row("full").reference
    # The full cache is the reference in every budget column.
    for col in t.columns:
        assert t.value("full", col, "accuracy") == pytest.approx(0.7)
        assert t.value("full", col, "ci_lo") == pytest.approx(0.396777, abs=2e-6)
    assert t.value("h2o", "B=128", "accuracy") == pytest.approx(0.2)
    assert t.value("h2o", "B=256", "accuracy") == pytest.approx(0.6)
    assert t.value("snapkv", "B=256", "accuracy") is None  # never ran
    assert "0.700 [0.397, 0.892]" in t.row("full").cells["B=128"].text


def test_error_rows_count_as_incorrect(standard):
    t = standard.table("accuracy", "gsm8k")
    assert t.value("snapkv", "B=128", "accuracy") == pytest.approx(0.6)  # 6 of 10, g9 errored
    assert t.value("snapkv", "B=128", "n_errors") == 1
    assert "1 err" in t.row("snapkv").cells["B=128"].text


def test_delta_and_mcnemar(standard):
    t = standard.table("delta", "gsm8k")
    assert t.value("h2o", "B=128", "delta") == pytest.approx(-0.5)
    assert t.value("h2o", "B=128", "gains") == 1
    assert t.value("h2o", "B=128", "losses") == 6
    assert t.value("h2o", "B=128", "p_value") == 0.125
    assert t.value("h2o", "B=256", "delta") == pytest.approx(-0.1)
    assert t.value("h2o", "B=256", "p_value") == 1.0
    assert t.row("full").cells["B=128"].text == "reference"
    # A partial cell is compared on the problems it has: tova B=256 has g0..g4, right on g0..g2,
    # where the full cache is right on all five: 2 losses, delta (3 - 5) / 5.
    assert t.value("tova", "B=256", "n_pairs") == 5
    assert t.value("tova", "B=256", "delta") == pytest.approx(-0.4)
    assert t.value("tova", "B=256", "p_value") == 0.5


def test_length_stops_and_cost(standard):
    length = standard.table("length", "gsm8k")
    assert length.value("h2o", "B=128", "mean_output_tokens") == 40
    assert length.value("h2o", "B=128", "ratio_to_full") == pytest.approx(2.0)
    assert length.value("full", "B=128", "ratio_to_full") == pytest.approx(1.0)
    # snapkv's error row has no output: the mean is over its 9 generations.
    assert length.value("snapkv", "B=128", "mean_output_tokens") == 20
    stops = standard.table("stops", "gsm8k")
    assert stops.value("h2o", "B=128", "truncation_rate") == pytest.approx(0.3)
    assert stops.value("h2o", "B=128", "repetition_rate") == pytest.approx(0.1)
    assert stops.value("full", "B=256", "truncation_rate") == 0
    cost = standard.table("efficiency", "gsm8k")
    assert cost.value("h2o", "B=128", "row_decode_tokens_per_s") == pytest.approx(400 / 20)
    assert cost.value("h2o", "B=128", "kv_bytes_peak") == 2048  # max, not mean
    assert cost.value("full", "B=128", "kv_bytes_peak") == 4096


def test_fidelity_on_hand_made_output_ids(standard):
    t = standard.table("fidelity", "gsm8k")
    # h2o B=128 agrees with the full cache for 5 tokens on every problem; same prediction on g0, g7.
    assert t.value("h2o", "B=128", "mean_prefix_tokens") == 5
    assert t.value("h2o", "B=128", "same_prediction") == pytest.approx(0.2)
    assert t.value("h2o", "B=128", "identical_output") == 0
    # h2o B=256: identical except g6, which diverges at token 10: (9 * 20 + 10) / 10.
    assert t.value("h2o", "B=256", "mean_prefix_tokens") == pytest.approx(19.0)
    assert t.value("h2o", "B=256", "same_prediction") == pytest.approx(0.9)
    assert t.value("h2o", "B=256", "identical_output") == pytest.approx(0.9)
    # The error row of snapkv is left out of fidelity.
    assert t.value("snapkv", "B=128", "n_pairs") == 9


def test_category_means(standard):
    t = standard.table("category", "category-Math")
    # Macro average of gsm8k and math500: h2o B=128 (0.2 + 0.25) / 2, B=256 (0.6 + 0.75) / 2.
    assert t.value("h2o", "B=128", "accuracy") == pytest.approx(0.225)
    assert t.value("h2o", "B=256", "accuracy") == pytest.approx(0.675)
    assert t.value("full", "B=128", "accuracy") == pytest.approx(0.6)
    assert t.value("snapkv", "B=128", "n_datasets") == 1
    assert "(1/2)" in t.row("snapkv").cells["B=128"].text


# ---------------------------------------------------------------- shards, states, holes


def test_two_shards_make_one_cell_and_metrics_are_recomputed(standard):
    (snap,) = [r for r in standard.results.values() if r.cell.policy == "snapkv"]
    assert snap.cell.shard_count == 2
    assert sorted(snap.cell.runs[0].jobs) == [0, 1]
    assert snap.cell.complete
    assert snap.metrics.n_rows == 10
    # metrics.json of both shards claims 0.999: the report ignores it.
    assert snap.metrics.accuracy == pytest.approx(0.6)


def test_missing_shard_is_listed(tmp_path):
    rows = [fx.sample_row(f"g{i}", True) for i in range(5)]
    fx.write_job(tmp_path / "full", fx.job_config(policy="full"), rows)
    fx.write_job(tmp_path / "a", fx.job_config(shard=(0, 3)), rows[:2])
    fx.write_job(tmp_path / "b", fx.job_config(shard=(2, 3)), rows[4:])
    result = build_report([tmp_path], tmp_path / "report")
    (issue,) = _issues(result, "missing shards")
    assert issue.detail == "no job folder for shard 1 of 3 (indices 0..2)"
    t = result.table("accuracy", "gsm8k")
    assert t.value("h2o", "B=128", "n") == 3
    assert t.value("h2o", "B=128", "complete") is False
    assert t.row("h2o").cells["B=128"].text.endswith("†")


def test_failed_running_and_missing_cells_are_listed(standard):
    (failed,) = _issues(standard, "failed")
    assert "tova B=128" in failed.where and "CUDA out of memory" in failed.detail
    (running,) = _issues(standard, "running")
    assert "tova B=256" in running.where and "5/10" in running.detail
    missing = {i.where: i.detail for i in _issues(standard, "missing cells")}
    assert missing["tiny_random / gsm8k / snapkv"] == "no job folder for B=256"
    assert "B=128, B=256" in missing["tiny_random / math500 / tova"]
    md = standard.markdown.read_text()
    attention = md.split("## Attention")[1].split("## How to read")[0]
    for text in ("failed", "CUDA out of memory", "running", "no job folder for B=256"):
        assert text in attention


def test_duplicate_folders_prefer_the_finished_run(tmp_path):
    rows = [fx.sample_row(f"g{i}", i < 2) for i in range(4)]
    fx.write_job(tmp_path / "full", fx.job_config(policy="full"), rows)
    fx.write_job(tmp_path / "old", fx.job_config(), rows[:1], state="failed", n_target=4, error="boom")
    fx.write_job(tmp_path / "rerun", fx.job_config(), rows)
    result = build_report([tmp_path], tmp_path / "report")
    (ignored,) = _issues(result, "ignored folder")
    assert ignored.paths[0].name == "old"
    assert not _issues(result, "failed")
    assert result.table("accuracy", "gsm8k").value("h2o", "B=128", "complete") is True


def test_full_cache_launched_at_several_budgets_is_one_reference(tmp_path):
    rows = [fx.sample_row(f"g{i}", True) for i in range(3)]
    fx.write_job(tmp_path / "f1", fx.job_config(policy="full"), rows)  # as the pipeline writes it now
    fx.write_job(tmp_path / "h", fx.job_config(), rows)
    result = build_report([tmp_path], tmp_path / "report")
    assert not result.issues
    # folders written before the full cache's budget was recorded as none hold the budget it was launched
    # at (`policy=full,h2o budget=256`): they are read as none, so they are the same cell, not another one
    old = fx.job_config(policy="full", overrides={"budget.tokens": 256, "budget.slack": 16})
    assert old["budget"] == {"tokens": 256, "slack": 16}
    fx.write_job(tmp_path / "f2", old, rows)
    result = build_report([tmp_path], tmp_path / "report")
    (ref,) = [r.cell for r in result.results.values() if r.cell.is_full]
    assert (ref.tokens, ref.slack, len(ref.jobs)) == (None, None, 1)
    assert result.table("accuracy", "gsm8k").value("full", "B=128", "n") == 3
    # a second folder of the same run (overlapping sweeps) is listed like any policy's duplicate
    (ignored,) = _issues(result, "ignored folder")
    assert "duplicate of shard 0" in ignored.detail


def test_single_dataset_has_no_category_means(tmp_path):
    rows = [fx.sample_row(f"g{i}", i < 2) for i in range(4)]
    fx.write_job(tmp_path / "full", fx.job_config(policy="full"), rows)
    fx.write_job(tmp_path / "h", fx.job_config(), rows)
    result = build_report([tmp_path], tmp_path / "report")
    assert not [t for t in result.tables if t.kind == "category"]
    assert "### Category means" not in result.markdown.read_text()


def test_cli_prints_the_chosen_tables(tmp_path, capsys):
    rows = [fx.sample_row(f"g{i}", i < 2) for i in range(4)]
    fx.write_job(tmp_path / "full", fx.job_config(policy="full"), rows)
    fx.write_job(tmp_path / "h", fx.job_config(), rows[:1] + [fx.sample_row(g, False) for g in ("g1", "g2", "g3")])
    assert main([str(tmp_path), "--show", "accuracy", "--show", "delta"]) == 0
    out = capsys.readouterr().out
    assert "tiny_random / gsm8k: Accuracy" in out and "Change in accuracy" in out
    assert "| h2o | 0.250 [" in out and "| h2o | -0.250 [" in out and "(+0/-1" in out
    assert main([str(tmp_path), "--show", "none"]) == 0
    assert "| h2o |" not in capsys.readouterr().out


def test_prompt_kept_is_averaged_into_metrics_cells_csv_and_a_table_beside_accuracy(tmp_path, capsys):
    from kvexp.pipeline.metrics import compute_metrics

    full = [fx.sample_row(f"g{i}", True, prompt_kept=(1.0, 1.0)) for i in range(3)]
    h2o = [
        fx.sample_row("g0", True, prompt_kept=(0.5, 0.9)),
        fx.sample_row("g1", False, prompt_kept=(0.3, 0.7)),
        fx.error_row("g2"),  # no prompt numbers: left out of the means
    ]
    old = [fx.sample_row(f"g{i}", True) for i in range(3)]  # rows written before the fields existed
    fx.write_job(tmp_path / "full", fx.job_config(policy="full"), full)
    fx.write_job(tmp_path / "h", fx.job_config(), h2o)
    fx.write_job(tmp_path / "s", fx.job_config(policy="snapkv"), old)
    metrics = compute_metrics(h2o, policy="h2o")
    assert metrics["prompt_kept_share"] == pytest.approx(0.4) and metrics["prompt_kept_any"] == pytest.approx(0.8)
    assert compute_metrics(old)["prompt_kept_share"] is None

    result = build_report([tmp_path], tmp_path / "report")
    with open(result.out / "cells.csv") as fh:
        cells = {c["policy"]: c for c in csv.DictReader(fh)}
    assert float(cells["h2o"]["prompt_kept_share"]) == pytest.approx(0.4)
    assert float(cells["h2o"]["prompt_kept_any"]) == pytest.approx(0.8)
    assert float(cells["full"]["prompt_kept_any"]) == 1.0 and cells["snapkv"]["prompt_kept_share"] == ""
    kinds = [t.kind for t in result.tables]
    assert kinds[kinds.index("accuracy") + 1] == "prompt"
    md = result.markdown.read_text()
    assert "| h2o | 0.40 · any 0.80 |" in md and "| **full** (reference) | 1.00 · any 1.00 |" in md
    assert main([str(tmp_path), "--out", str(tmp_path / "again")]) == 0  # by default beside accuracy
    assert "Prompt kept at the end of generation" in capsys.readouterr().out


def test_torn_last_line_is_skipped_and_bad_lines_flagged(tmp_path):
    rows = [fx.sample_row(f"g{i}", True) for i in range(3)]
    job = fx.write_job(tmp_path / "full", fx.job_config(policy="full"), rows, torn_tail=True)
    scanned = scan_jsonl(job / "samples.jsonl")
    assert (len(scanned.rows), scanned.torn, scanned.bad_lines) == (3, True, [])
    result = build_report([tmp_path], tmp_path / "report")
    # Only full-cache runs: the table still has one column to show them in.
    assert result.table("accuracy", "gsm8k").value("full", "full cache", "n") == 3
    assert not _issues(result, "bad lines")
    # A broken line in the middle is skipped and reported.
    path = job / "samples.jsonl"
    lines = path.read_text().split("\n")
    path.write_text("\n".join([lines[0], "{not json", *lines[1:3]]) + "\n")
    result = build_report([tmp_path], tmp_path / "report")
    assert len(_issues(result, "bad lines")) == 1


def test_unreadable_config_is_listed_not_fatal(tmp_path):
    rows = [fx.sample_row(f"g{i}", True) for i in range(3)]
    fx.write_job(tmp_path / "full", fx.job_config(policy="full"), rows)
    bad = fx.write_job(tmp_path / "bad", fx.job_config(), rows)
    (bad / "config.yaml").write_text("model: {name: [unclosed\n")
    result = build_report([tmp_path], tmp_path / "report")
    (issue,) = _issues(result, "unreadable")
    assert issue.paths == [bad]


def test_several_samples_per_problem_use_pass_at_1_and_bootstrap(tmp_path):
    cfg = fx.job_config(overrides={"generation.num_samples": 2, "generation.temperature": 0.7})
    full_cfg = fx.job_config(policy="full", overrides={"generation.num_samples": 2, "generation.temperature": 0.7})
    correct = {"a": (True, False), "b": (True, True), "c": (False, False)}
    rows = [fx.sample_row(p, c, sample_idx=s) for p, cs in correct.items() for s, c in enumerate(cs)]
    fx.write_job(tmp_path / "full", full_cfg, rows)
    fx.write_job(tmp_path / "h", cfg, rows)
    result = build_report([tmp_path], tmp_path / "report")
    (r,) = [r for r in result.results.values() if not r.cell.is_full]
    assert r.metrics.accuracy == pytest.approx(0.5)  # mean of 0.5, 1, 0
    assert r.metrics.ci_method == "bootstrap"
    assert r.metrics.samples_per_problem == 2
    assert 0 <= r.metrics.ci_lo < 0.5 < r.metrics.ci_hi <= 1
    assert r.paired.n_pairs == 6 and r.paired.delta.value == 0


def test_seeds_are_one_cell_with_mean_spread_and_per_seed_values(tmp_path):
    """A seed sweep is one cell per condition: the mean over seeds, their spread, a two-level
    interval, each seed against the full cache's run of the same seed."""
    ids = [f"g{i}" for i in range(4)]
    for seed in (0, 1):  # the full cache right on every problem, in both seeds
        cfg = fx.job_config(policy="full", overrides={"seed": seed})
        fx.write_job(tmp_path / f"full-{seed}", cfg, [fx.sample_row(g, True) for g in ids])
    right = {0: 3, 1: 1, 2: 2}  # h2o: g0..g2 right at seed 0, g0 at seed 1, g0..g1 at seed 2
    for seed, n_right in right.items():
        rows = [fx.sample_row(g, i < n_right, output_ids=list(range(20 + 10 * seed))) for i, g in enumerate(ids)]
        fx.write_job(tmp_path / f"h2o-{seed}", fx.job_config(overrides={"seed": seed}), rows)
    result = build_report([tmp_path], tmp_path / "report")  # no mixed-config refusal
    acc = result.table("accuracy", "gsm8k")
    assert acc.value("h2o", "B=128", "accuracy") == pytest.approx((0.75 + 0.25 + 0.5) / 3)
    assert acc.value("h2o", "B=128", "n_seeds") == 3
    assert acc.value("h2o", "B=128", "seed_sd") == pytest.approx(0.25)  # sd of 0.75, 0.25, 0.5
    (h2o,) = [r for r in result.results.values() if not r.cell.is_full]
    assert h2o.metrics.ci_method == "two-level bootstrap" and len(h2o.cell.runs) == 3
    # paired per seed: seed 0 -0.25, seed 1 -0.75; seed 2 has no full cache and is left out
    delta = result.table("delta", "gsm8k")
    assert delta.value("h2o", "B=128", "delta") == pytest.approx(-0.5)
    assert delta.value("h2o", "B=128", "n_pairs") == 8
    assert any("Seed 2 has no full-cache run" in n for n in delta.notes)
    (missing,) = _issues(result, "missing seeds")
    assert "full" in missing.where and "seed 2" in missing.detail
    # length ratio: 20/20 at seed 0, 30/20 at seed 1 -> mean 1.25
    assert result.table("length", "gsm8k").value("h2o", "B=128", "ratio_to_full") == pytest.approx(1.25)
    with open(result.out / "seeds.csv") as fh:
        per_seed = [r for r in csv.DictReader(fh) if r["policy"] == "h2o"]
    assert [(r["seed"], float(r["accuracy"])) for r in per_seed] == [("0", 0.75), ("1", 0.25), ("2", 0.5)]
    assert [r["vs_full_delta"] for r in per_seed] == ["-0.25", "-0.75", ""]
    with open(result.out / "cells.csv") as fh:
        cell = next(r for r in csv.DictReader(fh) if r["policy"] == "h2o")
    assert cell["seeds"] == "0 1 2" and cell["accuracy_by_seed"] == "0:0.75 1:0.25 2:0.5"
    md = result.markdown.read_text()
    assert "3 seeds (0, 1, 2), pooled in every cell" in md and "--ignore-key" not in md


def test_several_samples_give_pass_at_k_and_maj_at_k(tmp_path):
    over = {"generation.num_samples": 3, "generation.temperature": 0.7, "metrics.pass_k": [1, 3]}
    votes = {"a": [("1", True), ("2", False), ("1", True)], "b": [("2", False), ("3", False), ("1", True)]}
    rows = [fx.sample_row(p, c, sample_idx=j, prediction=v) for p, vs in votes.items() for j, (v, c) in enumerate(vs)]
    fx.write_job(tmp_path / "full", fx.job_config(policy="full", overrides=over), rows)
    result = build_report([tmp_path], tmp_path / "report")
    t = result.table("sampling", "gsm8k")
    assert t.fields[:3] == ("pass@1", "pass@1_lo", "pass@1_hi")
    assert t.value("full", "full cache", "pass@1") == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert t.value("full", "full cache", "pass@3") == 1.0  # both problems have a correct sample
    # maj@3: a votes 1 (right); b is a three-way tie with one right answer -> 1/3
    assert t.value("full", "full cache", "maj@3") == pytest.approx((1 + 1 / 3) / 2)
    assert "pass@3 1.00" in t.row("full").cells["full cache"].text


# ---------------------------------------------------------------- config checks and layout


def test_mixed_configs_are_refused_naming_the_key(tmp_path):
    rows = [fx.sample_row(f"g{i}", True) for i in range(3)]
    fx.write_job(tmp_path / "a", fx.job_config(policy="full"), rows)
    fx.write_job(tmp_path / "b", fx.job_config(overrides={"generation.max_new_tokens": 512}), rows)
    with pytest.raises(ReportError) as exc:
        build_report([tmp_path], tmp_path / "report")
    message = str(exc.value)
    assert "generation.max_new_tokens" in message and "64" in message and "512" in message
    assert "--ignore-key" in message
    # Named on purpose, the difference is accepted and the report says so.
    result = build_report([tmp_path], tmp_path / "report", ignore_keys=["generation.max_new_tokens"])
    assert any("generation.max_new_tokens" in n for n in result.notes)


def test_dataset_keys_may_differ_across_datasets_but_not_within(tmp_path):
    rows = [fx.sample_row(f"g{i}", True) for i in range(3)]
    fx.write_job(tmp_path / "a", fx.job_config(policy="full"), rows)
    folio = fx.job_config(dataset="folio", policy="full", overrides={"dataset.split": "dev"})
    fx.write_job(tmp_path / "b", folio, rows)
    build_report([tmp_path], tmp_path / "r")  # split differs between datasets: fine
    fx.write_job(tmp_path / "c", fx.job_config(overrides={"dataset.split": "train"}), rows)
    with pytest.raises(ReportError, match=r"dataset\.split \[within tiny_random / gsm8k\]"):
        build_report([tmp_path], tmp_path / "r")


def test_bookkeeping_keys_may_differ(tmp_path):
    rows = [fx.sample_row(f"g{i}", True) for i in range(3)]
    fx.write_job(tmp_path / "a", fx.job_config(policy="full"), rows)
    fx.write_job(
        tmp_path / "b",
        fx.job_config(
            overrides={
                "generation.batch_size": 32,
                "logger.group": "other",
                "hydra.job.num": 7,
                "output_root": "/elsewhere",
                "trace.n_problems": 0,
                "model.device": "cuda",
                "dataset.source": "bundled",
                # batching and memory (every key a resumed job may change, kvexp.pipeline.cell)
                "generation.max_batch_size": 8,
                "generation.memory_gb": 40,
                "generation.max_prefill_tokens": 1024,
            }
        ),
        rows,
    )
    result = build_report([tmp_path], tmp_path / "report")
    assert len(result.results) == 2


def test_policy_parameters_split_rows_unless_they_follow_the_budget(tmp_path):
    rows = [fx.sample_row(f"g{i}", True) for i in range(3)]
    fx.write_job(tmp_path / "full", fx.job_config(policy="full"), rows)
    for i, (tokens, norm) in enumerate([(128, "sum"), (128, "mean"), (256, "sum"), (256, "mean")]):
        params = {"normalize": norm, "window": tokens // 2}  # window = B/2, resolved
        fx.write_job(tmp_path / f"h{i}", fx.job_config(tokens=tokens, policy_params=params), rows)
    result = build_report([tmp_path], tmp_path / "report")
    t = result.table("accuracy", "gsm8k")
    assert [r.label for r in t.rows] == ["full", "h2o (normalize=mean)", "h2o (normalize=sum)"]
    assert any("policy.window follows the budget" in n for n in result.layouts[0].notes)
    assert not _issues(result, "missing cells")


def test_budget_schedules_are_told_apart_when_a_sweep_mixes_them(tmp_path):
    """A folder written before budget.schedule existed ran the cap schedule; one sweep with both schedules
    shows them as two rows of h2o, one that does not shows none."""
    rows = [fx.sample_row(f"g{i}", True) for i in range(3)]
    fx.write_job(tmp_path / "full", fx.job_config(policy="full"), rows)
    fx.write_job(tmp_path / "old", fx.job_config(), rows)  # no budget.schedule key: cap
    result = build_report([tmp_path], tmp_path / "report")
    assert [r.label for r in result.table("accuracy", "gsm8k").rows] == ["full", "h2o"]
    fx.write_job(tmp_path / "interval", fx.job_config(overrides={"budget.schedule": "interval"}), rows)
    result = build_report([tmp_path], tmp_path / "report")
    labels = [r.label for r in result.table("accuracy", "gsm8k").rows]
    assert labels == ["full", "h2o (schedule=cap)", "h2o (schedule=interval)"]


def test_a_sweep_over_a_generated_tasks_own_setting_is_reported_as_variants(tmp_path):
    """`dataset=chain dataset.steps=10,20` launches two cells per policy; the report shows them as two
    variants of each (as a policy parameter), where it used to refuse the sweep as mixing a fixed key."""
    rows = [fx.sample_row(f"g{i}", True) for i in range(3)]
    for steps in (10, 20):
        for policy in ("full", "h2o"):
            config = fx.job_config(policy=policy, dataset="chain", overrides={"dataset.steps": steps})
            fx.write_job(tmp_path / f"{policy}-{steps}", config, rows)
    result = build_report([tmp_path], tmp_path / "report")
    labels = [r.label for r in result.table("accuracy", "chain").rows]
    assert labels == ["full (steps=10)", "full (steps=20)", "h2o (steps=10)", "h2o (steps=20)"]


# ---------------------------------------------------------------- files: CSV, Markdown, plots


def test_csv_per_table_and_cells_csv(standard):
    names = {p.name for p in standard.csvs}
    assert "tiny_random__gsm8k__accuracy.csv" in names and "cells.csv" in names
    assert len(standard.csvs) == len(standard.tables) + 2  # cells.csv and seeds.csv
    with open(standard.out / "tables" / "tiny_random__gsm8k__delta.csv") as fh:
        rows = list(csv.DictReader(fh))
    h2o = next(r for r in rows if r["policy"] == "h2o")
    assert float(h2o["B=128:p_value"]) == 0.125 and int(h2o["B=128:losses"]) == 6
    with open(standard.out / "cells.csv") as fh:
        cells = list(csv.DictReader(fh))
    assert len(cells) == len(standard.results)
    full = next(c for c in cells if c["policy"] == "full" and c["dataset"] == "gsm8k")
    assert full["budget_tokens"] == "" and float(full["accuracy"]) == pytest.approx(0.7)


def test_markdown_has_tables_notes_and_plots(standard):
    md = standard.markdown.read_text()
    assert "| **full** (reference) | 0.700 [0.397, 0.892] |" in md
    assert "| h2o | -0.500 [" in md and "(+1/-6, p=0.125)" in md
    assert "Error rows count as incorrect" in md
    assert "Wilson score interval" in md
    for p in standard.plots:
        assert f"]({p.relative_to(standard.out).as_posix()})" in md


def test_plots_written_and_loadable(standard):
    stems = {p.stem for p in standard.plots}
    assert stems == {
        "accuracy_vs_budget__tiny_random",
        "length_vs_budget__tiny_random",
        "length_ratio_vs_budget__tiny_random",
        "accuracy_vs_kv_bytes__tiny_random",
        "prompt_share__tiny_random__gsm8k",  # math500 has no traces
    }
    for p in standard.plots:
        assert p.stat().st_size > 20_000, p
        image = matplotlib.image.imread(p)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
        assert image.std() > 0.05  # not a blank canvas


def test_prompt_share_is_the_mean_over_traced_problems():
    from kvexp.report.plots import mean_prompt_share

    traces = fx.prompt_share_trace("a", [1.0, 0.8, 0.6]) + fx.prompt_share_trace("b", [1.0, 0.6])
    steps, shares = mean_prompt_share(traces)
    assert steps == [0, 1, 2] and shares == pytest.approx([1.0, 0.7, 0.6])


# ---------------------------------------------------------------- CLI and W&B


def test_cli_default_out_and_errors(tmp_path, capsys):
    rows = [fx.sample_row(f"g{i}", True) for i in range(3)]
    fx.write_job(tmp_path / "s" / "0", fx.job_config(policy="full"), rows)
    assert main([str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "report" / "report.md").is_file()
    assert main([str(tmp_path / "s")]) == 0  # its own output folder is not a job folder
    fx.write_job(tmp_path / "s" / "1", fx.job_config(overrides={"generation.max_new_tokens": 9}), rows)
    assert main([str(tmp_path / "s")]) == 2
    assert "generation.max_new_tokens" in capsys.readouterr().err
    assert main([str(tmp_path / "s" / "report")]) == 2  # no job folders there
    with pytest.raises(SystemExit):
        main([str(tmp_path / "s"), str(tmp_path)])  # several DIRs need --out


def test_wandb_logging_with_a_stub(standard, tmp_path, monkeypatch):
    calls = {}

    class Run:
        url, dir = None, str(tmp_path / "wandb-run")

        def log(self, payload):
            calls["log"] = payload

        def finish(self):
            calls["finished"] = True

    def init(**kwargs):
        calls["init"] = kwargs
        return Run()

    stub = types.ModuleType("wandb")
    stub.init = init
    stub.Table = lambda columns, data: ("table", columns, data)
    stub.Image = lambda path: ("image", path)
    stub.Settings = lambda **settings: settings
    monkeypatch.setitem(sys.modules, "wandb", stub)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    sweep = standard.out.parent
    result = build_report([sweep], tmp_path / "report", wandb=True)
    init = calls["init"]
    assert init["group"] == "test-sweep" and init["project"] == "kvexp-tests"
    assert init["mode"] == "offline" and init["job_type"] == "report"
    assert init["settings"]["init_timeout"] == 20.0  # the jobs' default logger.init_timeout
    payload = calls["log"]
    assert sum(k.startswith("tables/") for k in payload) == len(result.tables) + 2  # + cells, seeds
    assert {"tables/cells", "tables/seeds"} <= set(payload)
    assert sum(k.startswith("plots/") for k in payload) == len(result.plots)
    assert calls["finished"] and result.wandb_run == str(tmp_path)  # the offline run folder


def test_wandb_offline_run_is_written(standard, tmp_path, monkeypatch):
    """The real wandb package, offline: no network, the run lands under the report folder."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    result = build_report([standard.out.parent], tmp_path / "report", wandb=True)
    run_dir = Path(result.wandb_run)
    assert run_dir.is_relative_to(tmp_path / "report" / "wandb")
    assert list(run_dir.glob("run-*.wandb"))


def test_report_imports_without_wandb_pyplot_or_torch():
    code = (
        "import sys, kvexp.report, kvexp.report.plots; "
        "assert 'wandb' not in sys.modules; assert 'matplotlib.pyplot' not in sys.modules; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_two_models_slack_columns_and_other_category(tmp_path):
    rows = [fx.sample_row(f"g{i}", i < 2) for i in range(4)]
    for model in ("A", "B"):
        fx.write_job(tmp_path / f"{model}-full", fx.job_config(model=model, policy="full"), rows)
        h1_rows = rows[:3] + [fx.sample_row("g3", True)]
        fx.write_job(tmp_path / f"{model}-h1", fx.job_config(model=model, slack=1), h1_rows)
    fx.write_job(tmp_path / "A-h16", fx.job_config(model="A", slack=16), rows)
    fx.write_job(tmp_path / "A-my-full", fx.job_config(model="A", dataset="mystery", policy="full"), rows)
    result = build_report([tmp_path], tmp_path / "report")
    a = result.table("accuracy", "gsm8k", model="A")
    assert a.columns == ["B=128 S=1", "B=128 S=16"]
    assert a.value("h2o", "B=128 S=1", "accuracy") == pytest.approx(0.75)
    assert a.value("h2o", "B=128 S=16", "accuracy") == pytest.approx(0.5)
    assert result.table("accuracy", "gsm8k", model="B").columns == ["B=128"]
    scopes = {t.scope for t in result.tables if t.kind == "category" and t.model == "A"}
    assert scopes == {"category-Math", "category-Other", "category-All"}
    missing = {i.where: i.detail for i in _issues(result, "missing cells")}
    assert missing["B"] == "no cells for datasets mystery"
    assert "no job folder for B=128 S=1, B=128 S=16" == missing["A / mystery / h2o"]
    assert {p.name for p in result.plots} >= {"accuracy_vs_budget__A.png", "accuracy_vs_budget__B.png"}


def test_model_sampling_presets_may_differ_across_models_not_within(tmp_path):
    rows = [fx.sample_row(f"g{i}", True) for i in range(3)]
    fx.write_job(tmp_path / "a", fx.job_config(model="A", policy="full"), rows)
    hot = {"generation.temperature": 0.6, "model.sampling.temperature": 0.6}
    fx.write_job(tmp_path / "b", fx.job_config(model="B", policy="full", overrides=hot), rows)
    build_report([tmp_path], tmp_path / "r")
    fx.write_job(tmp_path / "c", fx.job_config(model="A", overrides=hot), rows)
    with pytest.raises(ReportError, match=r"generation\.temperature \[within A\]"):
        build_report([tmp_path], tmp_path / "r")


def test_wandb_group_defaults_to_the_sweep_folder(tmp_path):
    from kvexp.report.loading import load_jobs
    from kvexp.report.wandb_log import wandb_target

    sweep = tmp_path / "2030-01-01_00-00-00"
    cfg = fx.job_config(policy="full", overrides={"logger.group": None})
    fx.write_job(sweep / "tiny_random" / "gsm8k" / "full", cfg, [fx.sample_row("g0", True)])
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    jobs, _ = load_jobs([sweep / "tiny_random"])
    target = wandb_target(jobs, [sweep / "tiny_random"])
    assert target.group == "2030-01-01_00-00-00" and target.project == "kvexp-tests"


# ---------------------------------------------------------------- plots of a suite sweep


def write_suite_sweep(root: Path, policies: tuple[str, ...]) -> Path:
    """Four organism tasks x `policies` x protect_prompt on/off x budgets 64, 128, 256, plus the full
    cache: the shape of experiment=organism_suite. Accuracy rises with the budget, more with the prompt
    pinned, so every line differs."""
    sweep, n = root / "suite", iter(range(10_000))
    datasets = ("chain", "recall", "read_once", "local_state")
    for d in datasets:
        ids = [f"{d}{i}" for i in range(10)]
        full = [fx.sample_row(i, True) for i in ids]
        fx.write_job(sweep / str(next(n)), fx.job_config(dataset=d, policy="full"), full)
        for k, policy in enumerate(policies):
            for protect in (False, True):
                for b, tokens in enumerate((64, 128, 256)):
                    right = min(10, b * 3 + k % 3 + 3 * protect)
                    rows = [fx.sample_row(i, j < right) for j, i in enumerate(ids)]
                    params = {"protect_prompt": protect}
                    cfg = fx.job_config(dataset=d, policy=policy, tokens=tokens, policy_params=params)
                    fx.write_job(sweep / str(next(n)), cfg, rows)
    return sweep


def test_a_suite_sweep_plots_one_panel_per_task_with_the_variant_axis_as_line_style(tmp_path):
    """A 6-policy sweep with protect_prompt on and off: 6 colours (one per policy), two line styles (one
    per protect_prompt value), one panel per task, the legend beside the panels, nothing cut off."""
    from kvexp.report.plots import VARIANT_STYLES, _lines, variant_colors

    policies = ("streaming_llm", "h2o", "tova", "snapkv", "rkv", "random")
    result = build_report([write_suite_sweep(tmp_path, policies)], tmp_path / "report")
    (layout,) = result.layouts
    assert layout.datasets == ["chain", "recall", "read_once", "local_state"]  # the registry's order
    colors = variant_colors([layout])
    lines = _lines(layout)
    assert len(lines) == 12 and len({colors[line.variant] for line in lines}) == 6
    assert {line.axis: line.style for line in lines} == {
        "protect_prompt=false": VARIANT_STYLES[0],
        "protect_prompt=true": VARIANT_STYLES[1],
    }
    for line in lines:  # a policy's two variants: the same colour, two styles
        twin = next(o for o in lines if o.policy == line.policy and o is not line)
        assert colors[twin.variant] == colors[line.variant] and twin.style != line.style

    path = next(p for p in result.plots if p.stem.startswith("accuracy_vs_budget"))
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    # a 2 x 2 grid of panels plus a legend column to their right: wider than tall, not a tall strip
    assert width > 1.2 * height and height > 600
    # nothing is drawn up to the image's edges (savefig's tight box keeps a margin around every label)
    for edge in (image[:3], image[-3:], image[:, :3], image[:, -3:]):
        assert edge[..., :3].min() > 0.9
