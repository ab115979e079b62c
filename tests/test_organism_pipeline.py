"""model=organism dataset=chain through the real pipeline: the full cache solves the task."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_organism_job_runs_and_scores_at_full_cache(tmp_path):
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "kvexp.main", "model=organism", "dataset=chain", "dataset.limit=8", "policy=full",
           "generation.max_new_tokens=400", "generation.batch_size=8", "logger=none", f"hydra.run.dir={tmp_path}"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["model"] == "organism" and metrics["dataset"] == "chain" and metrics["n"] == 8
    assert metrics["accuracy"] >= 0.9
