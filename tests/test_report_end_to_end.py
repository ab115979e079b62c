"""From a real sweep (kvexp.main on tiny_random) to a report, with numbers checked against the rows."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvexp.report import build_report

REPO = Path(__file__).resolve().parents[1]


def test_real_tiny_sweep_to_report(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WANDB_MODE": "offline", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "kvexp.main",
        "-m",
        "model=tiny_random",
        "policy=full,h2o",
        "budget=16,32",
        "dataset.limit=3",
        "generation.max_new_tokens=12",
        "logger=none",
        f"hydra.sweep.dir={sweep}",
    ]
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


def test_real_seed_and_sample_sweep_agrees_with_metrics_json(tmp_path):
    """A seed sweep with several samples per problem on the organism: the report pools the seeds into
    one cell per condition, and every per-seed number equals that job's metrics.json (one
    definition, kvexp.stats); a report of one seed shows metrics.json's intervals to the digit."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "kvexp.main",
        "-m",
        "model=organism",
        "dataset=chain",
        "dataset.steps=4",
        "dataset.limit=4",
        "policy=full,h2o",
        "budget.tokens=24",
        "seed=0,1",
        "generation.num_samples=3",
        "generation.temperature=1.0",
        "generation.max_new_tokens=80",
        "metrics.pass_k=[1,3]",
        "logger=none",
        f"hydra.sweep.dir={sweep}",
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folders = {p.name: p for p in sweep.glob("organism/chain/*") if (p / "metrics.json").is_file()}
    assert sorted(folders) == ["full,seed=0", "full,seed=1", "h2o-b24-s1,seed=0", "h2o-b24-s1,seed=1"]
    metrics = {name: json.loads((p / "metrics.json").read_text()) for name, p in folders.items()}

    result = build_report([sweep], tmp_path / "report")
    assert not result.issues, result.issues
    acc = result.table("accuracy", "chain", "organism")
    assert acc.value("full", "B=24", "n") == 2 * 4 * 3 and acc.value("full", "B=24", "n_seeds") == 2
    for policy, cell in (("full", "full"), ("h2o", "h2o-b24-s1")):
        per_seed = [metrics[f"{cell},seed={s}"]["accuracy"] for s in (0, 1)]
        assert acc.value(policy, "B=24", "accuracy") == pytest.approx(sum(per_seed) / 2)
    assert acc.value("full", "B=24", "accuracy") >= 0.75  # the organism solves 4-step walks
    with open(result.out / "seeds.csv") as fh:
        for row in csv.DictReader(fh):
            m = metrics[f"{'full' if row['policy'] == 'full' else 'h2o-b24-s1'},seed={row['seed']}"]
            assert float(row["accuracy"]) == pytest.approx(m["accuracy"])
            assert float(row["pass@3"]) == pytest.approx(m["pass_at_k"]["3"]["value"])
            assert float(row["maj@3"]) == pytest.approx(m["maj_at_k"]["3"]["value"])
    sampling = result.table("sampling", "chain", "organism")
    assert sampling.value("h2o", "B=24", "pass@3") >= sampling.value("h2o", "B=24", "pass@1")
    assert result.table("length", "chain", "organism").value("h2o", "B=24", "ratio_to_full") > 0
    assert any(p.stem.startswith("length_ratio_vs_budget") for p in result.plots)

    # one seed alone: the report's cell is the job, intervals included
    one = build_report([folders["full,seed=0"], folders["h2o-b24-s1,seed=0"]], tmp_path / "one")
    (h2o,) = [r for r in one.results.values() if not r.cell.is_full]
    m = metrics["h2o-b24-s1,seed=0"]
    assert [h2o.metrics.accuracy, h2o.metrics.ci_lo, h2o.metrics.ci_hi] == [m["accuracy"], *m["accuracy_ci95"]]
    assert h2o.metrics.ci_method == m["accuracy_ci_method"] == "bootstrap"
    for k in (1, 3):
        for name, table in (("pass_at_k", h2o.metrics.pass_at), ("maj_at_k", h2o.metrics.maj_at)):
            e = table[k]
            assert [e.value, e.lo, e.hi] == [m[name][str(k)]["value"], *m[name][str(k)]["ci95"]]
    assert h2o.metrics.unextracted_rate == m["unextracted_rate"]
