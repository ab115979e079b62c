"""`make bench` (kvexp.bench): the quick smoke run writes a well-formed bench.json with a row for every
requested policy. Timings are never asserted: they depend on the machine and on what else runs on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvexp.policies import POLICY_NAMES

REPO = Path(__file__).resolve().parents[1]
ROW_FIELDS = {
    "model": str,
    "engine": str,
    "policy": str,
    "new_tokens": int,
    "batch": int,
    "prompt_len": int,
    "decode_tokens_per_s": float,
    "ms_per_step": float,
    "prefill_s": float,
    "peak_resident_tokens": int,
    "kv_bytes_peak": int,
}
MACHINE_FIELDS = ("torch", "transformers", "threads", "cpu_model", "device")


def _bench(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "kvexp.bench", "--quick", "--threads", "1", "--out", str(out), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def _check_rows(result: dict, policies: list[str]) -> None:
    assert result["mode"] == "quick"
    for field in MACHINE_FIELDS:
        assert result["machine"][field] not in (None, ""), field
    rows = result["rows"]
    assert rows
    for row in rows:
        assert row["error"] is None, row
        for field, kind in ROW_FIELDS.items():
            assert isinstance(row[field], (int, float) if kind is float else kind), (field, row)
        assert row["engine"] in ("kvexp", "hf_generate")
        assert row["decode_tokens_per_s"] > 0 and row["ms_per_step"] > 0
        assert "budget" in row and "slack" in row and "kv_bytes_allocated" in row
        if row["policy"] == "full":
            assert row["budget"] is None
            assert row["peak_resident_tokens"] == row["prompt_len"] + row["new_tokens"] - 1
        else:
            assert row["peak_resident_tokens"] <= row["budget"]
        assert row["kv_bytes_peak"] > 0
    kvexp_policies = {r["policy"] for r in rows if r["engine"] == "kvexp"}
    assert kvexp_policies == {"full", *policies}
    # transformers' generate on the full cache is measured alongside, at batch 1 and the larger batch
    assert {r["batch"] for r in rows if r["engine"] == "hf_generate"} == {1, result["settings"]["batch_hi"]}
    for t in result["targets"]:
        assert t["status"] in ("PASS", "FAIL", "INFO", "n/a")
        assert {"target", "detail", "ratio", "threshold"} <= set(t)
    assert {t["target"] for t in result["targets"]} >= {
        "full_vs_generate",
        "budget_vs_full_long",
        "budget_vs_full_early",
        "batch_hi_vs_1",
    }


def test_quick_bench_every_policy(tmp_path):
    result, stdout = _bench(tmp_path, "--no-workload")
    _check_rows(result, [p for p in POLICY_NAMES if p != "full"])
    assert {t["target"] for t in result["targets"]} >= {"policy_vs_streaming_llm", "slack_lo_vs_hi"}
    assert "targets" in stdout and ("PASS" in stdout or "FAIL" in stdout)


def test_quick_bench_workload_section(tmp_path):
    result, stdout = _bench(tmp_path, "--only-workload")
    section = result["workload"]
    static, continuous, equal = section["batching"]
    assert (static["continuous"], continuous["continuous"]) == (False, True)
    assert static["tokens"] == continuous["tokens"] and equal["requests"] == continuous["requests"]
    # static batches of heavy-tailed lengths idle most rows; the measured share is the arithmetic one
    assert static["utilization"] == pytest.approx(static["utilization_expected"], abs=1e-9)
    assert continuous["utilization"] > static["utilization"] and continuous["decode_steps"] < static["decode_steps"]
    # decode alone, prefills left out: what the GPU check compares for the auto runs
    assert all(r["decode_tokens_per_s"] > 0 for r in section["batching"] + section["auto"])
    full, evicting = section["auto"]
    assert full["plan"]["limited_by"] == "memory" and 2 <= full["rows"] <= 4
    assert evicting["rows"] >= 4 * full["rows"]
    assert {r["policy"] for r in section["state"]} == set(POLICY_NAMES) - {"full"}
    assert all(r["state_over_kv"] <= 0.3 for r in section["state"])
    assert {(r["policy"], r["slack"]) for r in section["ops"]} >= {("full", None), ("rkv", 1), ("rkv", 8)}
    assert {t["target"] for t in result["targets"]} == {
        "continuous_vs_static",
        "continuous_vs_equal_lengths",
        "continuous_vs_equal_lengths_steady",
        "auto_rows_vs_full",
        "auto_tokens_vs_full",
        "auto_tokens_vs_full_whole",
        "state_vs_kv",
        "ops_vs_full",
    }
    assert "aten ops per decode step" in stdout and "utilization" in stdout
    by_name = {t["target"]: t for t in result["targets"]}
    assert by_name["continuous_vs_static"]["cpu_ratio"] > 0 and by_name["continuous_vs_static"]["cpu_status"]
    whole = by_name["auto_tokens_vs_full_whole"]  # a reference figure: a CPU ratio, but no verdict
    assert whole["status"] == "INFO" and whole["cpu_ratio"] > 0 and whole["cpu_status"] is None


def test_quick_bench_filters(tmp_path):
    result, _ = _bench(tmp_path, "--policies", "h2o,snapkv", "--models", "tiny_shaped", "--no-workload")
    assert {r["model"] for r in result["rows"]} == {"tiny_shaped"}
    assert {r["policy"] for r in result["rows"] if r["engine"] == "kvexp"} == {"full", "h2o", "snapkv"}
    assert all(r["error"] is None for r in result["rows"])


def test_unknown_policy_is_refused(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "kvexp.bench", "--quick", "--policies", "nope", "--out", str(tmp_path / "b.json")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "unknown policy 'nope'" in proc.stderr


def test_target_verdicts():
    """A ratio target passes at or above its threshold, a size target at or below its limit; reference
    figures are INFO whatever they read, a missing figure n/a; the CPU-time cross-check has its own verdict."""
    from kvexp.bench.targets import check, check_at_most

    fast, slow = {"batch": 1, "cpu_ms_per_step": 10.0}, {"batch": 1, "cpu_ms_per_step": 20.0}
    labels = dict(threshold=0.9, num_label="a", den_label="b")
    passed = check("t", "d", num=90.0, den=100.0, **labels, cpu=(slow, fast))
    assert (passed["status"], passed["ratio"], passed["cpu_ratio"], passed["cpu_status"]) == ("PASS", 0.9, 0.5, "FAIL")
    assert check("t", "d", num=89.0, den=100.0, **labels)["status"] == "FAIL"
    assert check("t", "d", num=1.0, den=100.0, **labels, reference=True)["status"] == "INFO"
    assert check("t", "d", num=None, den=100.0, **labels)["status"] == "n/a"
    assert check_at_most("s", "d", 0.3, 0.3)["status"] == "PASS"
    assert check_at_most("s", "d", 0.31, 0.3)["status"] == "FAIL"
    assert check_at_most("s", "d", None, 0.3)["status"] == "n/a"
