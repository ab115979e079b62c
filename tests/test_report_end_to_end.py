"""From a real sweep (kvexp.main on tiny_random) to a report, with numbers checked against the rows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kvexp.report import build_report

REPO = Path(__file__).resolve().parents[1]


def test_real_tiny_sweep_to_report(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WANDB_MODE": "offline", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "kvexp.main", "-m", "model=tiny_random", "policy=full,h2o", "budget=16,32",
           "dataset.limit=3", "generation.max_new_tokens=12", "logger=none", f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    result = build_report([sweep], tmp_path / "report")
    assert result.markdown.read_text().count("h2o") >= 1 and not [i for i in result.issues if i.kind == "failed"]
    table = result.table("accuracy", "gsm8k")
    for budget in (16, 32):
        folder = next(sweep.glob(f"tiny_random/gsm8k/h2o-b{budget}-s1"))
        rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
        expected = sum(r["correct"] for r in rows) / len(rows)
        assert table.value("h2o", f"B={budget}", "accuracy") == expected
        lengths = result.table("length", "gsm8k").value("h2o", f"B={budget}", "mean_output_tokens")
        assert lengths == sum(r["n_output_tokens"] for r in rows) / len(rows)
    assert all(p.stat().st_size > 5000 for p in result.plots) and len(result.plots) >= 4
