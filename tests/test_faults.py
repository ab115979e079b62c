"""Jobs under faults: W&B that cannot start, resumes with other weights or fewer problems, early and
hard kills, results others must read, bad settings caught before the model loads, failed sweeps, and
corrupted files."""
from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from kvexp.models import ModelSource
from kvexp.pipeline import IncompatibleJobFolder, read_jsonl, run_job
from kvexp.pipeline.config import compose_config
from test_pipeline import FAST, assert_complete, cfg, cli, load, run, samples

DEAD_SERVER = "http://127.0.0.1:9"  # the discard port: nothing listens, so W&B cannot reach a server


# ---- 1. W&B that cannot start ----

@pytest.mark.parametrize("key", [None, "0123456789abcdef0123456789abcdef01234567"])
def test_a_job_finishes_when_wandb_online_cannot_start(tmp_path, key):
    """Online W&B without a key, or with a key and no server: the job warns, logs offline instead, and
    finishes with complete local results."""
    job = tmp_path / "job"
    env = {"WANDB_MODE": "online", "WANDB_BASE_URL": DEAD_SERVER, "HOME": str(tmp_path / "home"),
           "WANDB_CONFIG_DIR": str(tmp_path / "home" / ".config" / "wandb")}
    if key:
        env["WANDB_API_KEY"] = key
    proc = cli(*FAST, "logger=wandb", "logger.init_timeout=2", f"hydra.run.dir={job}", env_overrides=env,
               env_remove=() if key else ("WANDB_API_KEY",))
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert_complete(job, 2)
    assert "logger.init_timeout=2" in out and "logging offline" in out, out
    assert list((job / "wandb").glob("offline-run-*")), sorted(p.name for p in (job / "wandb").iterdir())


def test_a_tracker_without_a_run_logs_nothing_and_raises_nothing(tmp_path, monkeypatch):
    import wandb

    from kvexp.tracking.wandb_tracker import WandbTracker

    def refuse(*args, **kwargs):
        raise RuntimeError("no server")

    monkeypatch.setattr(wandb, "init", refuse)
    tracker = WandbTracker({"mode": "online"}, job_dir=tmp_path, name="cell", group=None, config={})
    assert tracker.run is None
    tracker.log_sample({"correct": True, "error": None, "n_output_tokens": 3}, {"samples_done": 1})
    tracker.finish(state="done", metrics={"accuracy": 1.0}, rows=[{"id": "a"}], traces=[])
