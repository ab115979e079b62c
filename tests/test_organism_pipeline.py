"""The demo (`make demo`, conf/experiment/demo.yaml) through the real pipeline and report: the organism
solves its task at full cache, and policies differ at a budget well below the trace length."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kvexp.report import build_report

REPO = Path(__file__).resolve().parents[1]


def test_demo_sweep_shows_policies_that_differ(tmp_path):
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    # the demo's own cells (full, streaming_llm, snapkv, h2o x budgets 128, 256) on 16 of its 32 problems
    cmd = [
        sys.executable,
        "-m",
        "kvexp.main",
        "-m",
        "experiment=demo",
        "dataset.limit=16",
        f"hydra.sweep.dir={tmp_path}",
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # the full cache, launched at both budgets, ran once into one folder
    assert sorted(p.parent.name for p in tmp_path.glob("organism/chain/*/metrics.json")) == [
        "full",
        *(f"{p}-b{b}-s1" for p in ("h2o", "snapkv", "streaming_llm") for b in (128, 256)),
    ]
    result = build_report([tmp_path], tmp_path / "report")
    assert not result.issues, result.issues
    acc = result.table("accuracy", "chain", "organism")
    assert acc.columns == ["B=128", "B=256"]
    assert acc.value("full", "B=128", "n") == 16
    assert acc.value("full", "B=128", "accuracy") >= 0.9
    # replies are ~295 tokens: at B=128 H2O keeps the fact table, StreamingLLM drops it (chance is 0.1)
    assert acc.value("h2o", "B=128", "accuracy") >= 0.8
    assert acc.value("streaming_llm", "B=128", "accuracy") <= 0.3
    assert acc.value("snapkv", "B=128", "accuracy") <= 0.4
