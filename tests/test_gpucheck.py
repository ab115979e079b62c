"""`make gpu-check` (kvexp.gpucheck): the verdict logic, the CPU path end to end on a few organism
problems, the committed CPU reference, and the wheel folder's checks (`make gpu-wheels`)."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch
import yaml

from kvexp.gpucheck import __main__ as gpucheck
from kvexp.gpucheck import correctness, speed, wheels
from kvexp.gpucheck.verdicts import (
    FAIL,
    INFO,
    NOT_RUN,
    PASS,
    Findings,
    all_equal,
    count_within,
    info,
    not_run,
    passed,
    ratio_within,
)
from kvexp.pipeline.config import CONFIG_DIR


def test_verdicts_against_their_targets():
    assert all_equal("c", "w", 32, 32).status == PASS
    assert all_equal("c", "w", 31, 32).status == FAIL
    assert all_equal("c", "w", 0, 0).status == FAIL  # nothing compared is no pass
    assert count_within("c", "w", 30, 31, 32).status == PASS  # one problem either way
    assert count_within("c", "w", 32, 31, 32).status == PASS
    assert count_within("c", "w", 29, 31, 32).status == FAIL
    assert ratio_within("c", "w", 1.149, 1.0, 0.15).status == PASS
    assert ratio_within("c", "w", 0.851, 1.0, 0.15).status == PASS
    assert ratio_within("c", "w", 1.151, 1.0, 0.15).status == FAIL
    assert ratio_within("c", "w", 0.849, 1.0, 0.15).status == FAIL
    line = count_within("organism.h2o.accuracy", "h2o", 30, 31, 32).line()
    assert line.startswith("PASS ") and "organism.h2o.accuracy" in line and "30/32 vs 31/32" in line


def test_a_run_passes_with_no_fail_and_at_least_one_pass():
    ok, bad = all_equal("a", "w", 1, 1), all_equal("b", "w", 0, 1)
    figure, skipped = info("c", "w", "3 tok/s"), not_run("d", "w", "no GPU")
    assert (figure.status, skipped.status) == (INFO, NOT_RUN)
    assert passed([ok, figure, skipped])
    assert not passed([ok, bad, figure])
    assert not passed([figure, skipped])  # nothing checked


def _run(tmp_path, *args) -> tuple[int, dict]:
    out = tmp_path / "gpucheck.json"
    code = gpucheck.main(["--device", "cpu", "--out", str(out), *args])
    return code, json.loads(out.read_text())


def test_cpu_run_passes_the_correctness_checks_and_marks_gpu_checks_not_run(tmp_path, capsys):
    code, result = _run(tmp_path, "--problems", "2")
    stdout = capsys.readouterr().out
    status = {v["check"]: v["status"] for v in result["verdicts"]}
    assert code == 0 and result["passed"]
    for policy in correctness.POLICIES:
        assert status[f"organism.{policy}.batching"] == PASS
        assert status[f"organism.{policy}.accuracy"] == PASS
        assert status[f"organism.{policy}.vs_cpu"] == INFO
    assert status["organism.full.generate"] == PASS
    gpu_only = speed.checks(speed.GpuPlan())
    assert {c for c, s in status.items() if s == NOT_RUN} == set(gpu_only) and len(gpu_only) == 6
    assert stdout.count("NOT RUN ") == len(gpu_only) and "PASSED" in stdout
    full = result["figures"]["organism"]["policies"]["full"]
    assert full["problems"] == 2 and full["errors"] == 0 and full["equal_alone"] == 2
    # the CPU made the reference: the same rows, token for token
    assert result["verdicts"][2]["figure"] == "2/2 equal"


def test_accuracy_off_the_reference_by_more_than_one_problem_fails_the_run(tmp_path, monkeypatch, capsys):
    reference = correctness.load_reference()
    reference["policies"]["full"]["correct"] = [False] * reference["problems"]  # the full cache solves both
    monkeypatch.setattr(correctness, "load_reference", lambda: reference)
    monkeypatch.setattr(correctness, "POLICIES", ("full", "h2o"))  # fewer runs: h2o stands for the rest
    code, result = _run(tmp_path, "--problems", "2")
    status = {v["check"]: v["status"] for v in result["verdicts"]}
    assert code == 1 and not result["passed"]
    assert status["organism.full.accuracy"] == FAIL and status["organism.h2o.accuracy"] == PASS
    assert status["organism.full.batching"] == status["organism.full.generate"] == PASS
    assert "FAILED" in capsys.readouterr().out


def test_more_problems_than_the_reference_holds_is_refused_before_any_model_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(correctness, "load_organism", lambda: pytest.fail("the model loaded"))
    with pytest.raises(SystemExit, match="covers 1 to 32 problems"):
        gpucheck.main(["--device", "cpu", "--problems", "33", "--out", str(tmp_path / "x.json")])


def test_reference_is_the_readme_organism_problem_set():
    """The reference holds the first problems of the README's organism table (dataset=chain as
    configured), with the four-task organism's figures at B=128 there (100 problems: full 1.00, H2O 0.14,
    SnapKV-D 0.10, StreamingLLM 0.09) within a few problems."""
    reference = correctness.load_reference()
    chain = yaml.safe_load((CONFIG_DIR / "dataset" / "chain.yaml").read_text())
    assert reference["chain"] == {k: chain[k] for k in correctness.CHAIN} == correctness.CHAIN
    assert reference["budget"] == correctness.BUDGET == 128 and reference["problems"] == 32
    accuracy = {name: p["accuracy"] for name, p in reference["policies"].items()}
    assert set(accuracy) == set(correctness.POLICIES)
    readme = {"full": 1.00, "h2o": 0.14, "snapkv": 0.10, "streaming_llm": 0.09}
    assert accuracy["full"] == 1.0
    assert all(abs(accuracy[name] - figure) <= 0.15 for name, figure in readme.items()), accuracy
    assert all(len(p["digests"]) == len(p["correct"]) == 32 for p in reference["policies"].values())


def test_configs_ship_inside_the_package():
    """A wheel carries kvexp/conf (in a checkout, a link to conf/), so the check and `python -m
    kvexp.main` run from an installed wheel with no checkout."""
    package = Path(correctness.__file__).resolve().parents[1]
    assert CONFIG_DIR == package / "conf" and (CONFIG_DIR / "config.yaml").is_file()
    assert (CONFIG_DIR / "model" / "organism.yaml").is_file() and correctness.REFERENCE.is_file()


def test_gpu_section_runs_end_to_end_at_tiny_scale_on_the_cpu(tmp_path):
    """The GPU section's code path on a tiny bench model: bandwidth, batch-1 speed, both auto runs
    planned by kvexp.engine.memory (on a CPU no peak memory is measured, so no memory verdict)."""
    plan = speed.GpuPlan(
        "tiny_kv_heavy", budget=48, full_new_tokens=64, prompt_len=16, steps=3, max_rows=4, batch1_tokens=4, copy_mib=1
    )
    lines = []
    findings = Findings(tmp_path / "gpucheck.json", {}, {}, lines.append)
    speed.run(torch.device("cpu"), plan, findings)
    status = {v.check: v.status for v in findings.verdicts}
    figures = findings.section("gpu")
    saved = json.loads((tmp_path / "gpucheck.json").read_text())  # saved after every verdict
    assert [v["check"] for v in saved["verdicts"]] == list(status) and saved["figures"]["gpu"]["auto"]["full"]
    assert status == {"gpu.bandwidth": INFO, "gpu.batch1": INFO, "gpu.auto.rows": INFO, "gpu.auto.tokens": INFO}
    assert set(status) < set(speed.checks(plan))
    evicting, full = figures["auto"]["h2o"], figures["auto"]["full"]
    assert evicting["rows"] == full["rows"] == 4 and evicting["plan"]["limited_by"] == "max_batch_size"
    assert (evicting["prompt_len"], full["prompt_len"]) == (48, 16 + 32)
    assert full["plan"]["capacity"] == 16 + 64 and evicting["plan"]["capacity"] == 48
    assert evicting["tokens"] == full["tokens"] == 4 * 3 and evicting["decode_tokens_per_s"] > 0
    assert evicting["planned_bytes"] > figures["model"]["weight_bytes"] and evicting["peak_allocated_bytes"] is None
    assert figures["batch1"]["steps"] == 3 and figures["batch1"]["ratio"] > 0
    assert any("4 rows" in line for line in lines)


def test_a_batch_that_fell_back_to_one_row_at_a_time_is_stopped():
    guard = speed.stop_if_fell_back(4)
    cache = types.SimpleNamespace(ctx=types.SimpleNamespace(prefill=True))
    guard(cache, [0, 1, 2, 3])  # the batch's own prefill
    guard(types.SimpleNamespace(ctx=types.SimpleNamespace(prefill=False)), [0, 1])  # rows finishing
    with pytest.raises(RuntimeError, match="fell back to one request at a time"):
        guard(cache, [7])


def _wheel(folder: Path, name: str, size: int = 100) -> None:
    with open(folder / name, "wb") as f:
        f.truncate(size)


def test_wheel_folder_checks(tmp_path, capsys):
    _wheel(tmp_path, "kvexp-0.1.0-py3-none-any.whl")
    _wheel(tmp_path, "omegaconf-2.3.1-py3-none-any.whl")
    assert wheels.problems(tmp_path) == [] and wheels.main([str(tmp_path)]) == 0
    assert "pip install --no-index --no-deps" in capsys.readouterr().out
    _wheel(tmp_path, "pyarrow-26.0.1-cp311-cp311-manylinux_2_28_x86_64.whl")
    _wheel(tmp_path, "big-1.0-py3-none-any.whl", 60 * 2**20)
    (tmp_path / "kvexp-0.1.0-py3-none-any.whl").unlink()
    found = " ".join(wheels.problems(tmp_path))
    assert "no kvexp wheel" in found and "pyarrow" in found and "over the 60 MiB limit" in found
    assert wheels.main([str(tmp_path)]) == 1
