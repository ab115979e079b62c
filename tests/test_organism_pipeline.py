"""The demo (`make demo`, conf/experiment/demo.yaml) through the real pipeline and report: the organism
solves both tasks at full cache, and at a third of the sequence H2O loses one and keeps the other, and
a pinned prompt rescues one policy on one task and not on the other."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kvexp.report import build_report

REPO = Path(__file__).resolve().parents[1]


def test_demo_sweep_shows_policies_that_differ(tmp_path):
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    # the demo's own cells (full, streaming_llm, h2o x protect_prompt on/off at B=128, on chain and recall),
    # on 8 of its 16 problems
    cmd = [
        sys.executable,
        "-m",
        "kvexp.main",
        "-m",
        "experiment=demo",
        "dataset.limit=8",
        f"hydra.sweep.dir={tmp_path}",
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    cells = ("full", "h2o-b128-s1", "streaming_llm-b128-s1")
    for task in ("chain", "recall"):
        assert sorted(p.parent.name for p in tmp_path.glob(f"organism/{task}/*/metrics.json")) == [
            f"{c},policy.protect_prompt={v}" for c in cells for v in (False, True)
        ]
    result = build_report([tmp_path], tmp_path / "report")
    chain, recall = (result.table("accuracy", task, "organism") for task in ("chain", "recall"))
    assert chain.columns == ["B=128"]

    def acc(table, policy, pinned):
        return table.value(f"{policy} (protect_prompt={str(pinned).lower()})", "B=128", "accuracy")

    assert acc(chain, "full", False) >= 0.9 and acc(recall, "full", False) >= 0.9
    # chain re-reads the prompt's facts: both policies lose them at B=128 (chance is 0.1), pinning rescues both
    assert acc(chain, "h2o", False) <= 0.4 and acc(chain, "streaming_llm", False) <= 0.4
    assert acc(chain, "h2o", True) >= 0.8 and acc(chain, "streaming_llm", True) >= 0.8
    # recall needs a value the reply wrote: H2O keeps it, StreamingLLM does not, and pinning cannot help
    assert acc(recall, "h2o", False) >= 0.8 and acc(recall, "h2o", True) >= 0.8
    assert acc(recall, "streaming_llm", False) <= 0.4 and acc(recall, "streaming_llm", True) <= 0.4
