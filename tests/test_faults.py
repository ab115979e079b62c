"""Jobs under faults: W&B that cannot start, resumes with other weights or fewer problems, early and
hard kills, results others must read, bad settings caught before the model loads, failed sweeps, and
corrupted files."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_pipeline import FAST, REPO, assert_complete, cli, load, run, samples

from kvexp.errors import ConfigError
from kvexp.models import ModelSource
from kvexp.pipeline import IncompatibleJobFolder, read_jsonl, run_job
from kvexp.pipeline.config import compose_config

DEAD_SERVER = "http://127.0.0.1:9"  # the discard port: nothing listens, so W&B cannot reach a server


# ---- 1. W&B that cannot start ----


@pytest.mark.parametrize("key", [None, "0123456789abcdef0123456789abcdef01234567"])
def test_a_job_finishes_when_wandb_online_cannot_start(tmp_path, key):
    """Online W&B without a key, or with a key and no server: the job warns, logs offline instead, and
    finishes with complete local results."""
    job = tmp_path / "job"
    env = {
        "WANDB_MODE": "online",
        "WANDB_BASE_URL": DEAD_SERVER,
        "HOME": str(tmp_path / "home"),
        "WANDB_CONFIG_DIR": str(tmp_path / "home" / ".config" / "wandb"),
    }
    if key:
        env["WANDB_API_KEY"] = key
    proc = cli(
        *FAST,
        "logger=wandb",
        "logger.init_timeout=2",
        f"hydra.run.dir={job}",
        env_overrides=env,
        env_remove=() if key else ("WANDB_API_KEY",),
    )
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


# ---- 6, 7. settings checked before any model loads, with messages that name the fix ----


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["generation.temperature=-1"], r"generation.temperature must be a number >= 0.*generation.temperature=0"),
        (["generation.top_p=1.5"], r"generation.top_p must be a number in \(0, 1\]"),
        (["generation.top_k=-3"], r"generation.top_k must be an integer >= 0"),
        (["seed=abc"], r"seed must be an integer.*seed=0"),
        (["generation.batch_size=lots"], r"generation.batch_size must be auto .* or an integer >= 1"),
        (["generation.max_batch_size=0"], r"generation.max_batch_size must be an integer >= 1"),
        (["generation.memory_gb=-2"], r"generation.memory_gb must be a positive number of GB, or null"),
        (["policy=snapkv", "policy.pool=bogus"], r"policy.pool must be avg or max, got 'bogus'"),
        (["policy=snapkv", "policy.kernel=4"], r"policy.kernel must be a positive odd integer"),
        (["policy=snapkv", "policy.kernel=0"], r"policy.kernel must be a positive odd integer"),
        (["policy=rkv", "policy.kernel=-3"], r"policy.kernel must be a positive odd integer"),
        (["policy=rkv", "policy.threshold=7"], r"policy.threshold must be a cosine similarity: a number in \[-1, 1\]"),
        (["policy=rkv", "policy.obs_window=0"], r"policy.obs_window must be an integer >= 1"),
        (["policy=h2o", "policy.window=1.5"], r"policy.window must be an integer >= 0"),
        (["model.device=cuda"], r"model.device=cuda but this machine has .*model.device=cpu"),
        (["dataset=chain", "dataset.shard.count=0"], r"shard count must be an integer >= 1.*dataset.shard.count=1"),
        (["dataset=chain", "+dataset.stpes=3"], r"dataset 'chain' has no setting stpes; its settings are steps"),
        (["dataset=chain", "dataset.source=hub"], r"generated from a seed.*dataset.source=generated"),
        (["trace.n_problems=-1"], r"trace.n_problems must be >= 0"),
        (
            ["generation.num_samples=4", "generation.temperature=0"],
            r"num_samples=4 with generation.temperature=0 \(greedy\).*temperature above 0.*generation.num_samples=1",
        ),
    ],
)
def test_bad_settings_fail_before_the_model_loads_naming_the_fix(tmp_path, monkeypatch, overrides, message):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    monkeypatch.setattr(ModelSource, "load", lambda self: pytest.fail("the model loaded before validation"))
    with pytest.raises(ConfigError, match=message):  # one exception for every config mistake
        run(tmp_path / "job", *overrides)
    assert load(tmp_path / "job", "status.json")["state"] == "failed"


@pytest.mark.parametrize(
    "args, message",
    [
        (["budget=-5"], "budget=-5: a budget is a positive number of KV entries"),
        (["budget=100"], "budget.tokens=100 sets any budget"),
        (["-m", "budget=128,100"], "budget.tokens=100 sets any budget"),
        (["hydra.run.dir=/sys/kernel"], "cannot write the job folder /sys/kernel"),
    ],
)
def test_command_line_mistakes_are_one_line_naming_the_fix(tmp_path, args, message):
    run_dir = [] if any(a.startswith("hydra.run.dir") for a in args) else [f"hydra.run.dir={tmp_path}/job"]
    proc = cli(*FAST, *run_dir, f"hydra.sweep.dir={tmp_path}/sweep", *args, env_remove=("HYDRA_FULL_ERROR",))
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0 and message in out, out
    assert "Traceback" not in out and "Unable to configure handler" not in out, out


# ---- 2. the weights are part of a cell's identity ----

ORGANISM = ["model=organism", "dataset=chain", "dataset.steps=2", "generation.max_new_tokens=40"]


def _copy_checkpoint(dest: Path, *, retrain: bool = False) -> Path:
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from kvexp.organism import CHECKPOINT_DIR

    shutil.copytree(CHECKPOINT_DIR, dest)
    if retrain:  # other weights of the same architecture, as a retraining would leave
        weights = load_file(dest / "model.safetensors")
        name = sorted(k for k in weights if "layers.1." in k)[0]
        weights[name] = weights[name] + 0.01 * torch.ones_like(weights[name])
        save_file(weights, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


def test_a_resume_with_other_weights_is_refused_and_a_moved_copy_resumes(tmp_path):
    job = tmp_path / "job"
    run(job, *ORGANISM)
    rows = samples(job)
    moved = _copy_checkpoint(tmp_path / "moved")
    run(job, *ORGANISM, f"model.path={moved}")  # the same weights elsewhere: nothing to redo
    assert samples(job) == rows
    retrained = _copy_checkpoint(tmp_path / "retrained", retrain=True)
    with pytest.raises(IncompatibleJobFolder, match="model.fingerprint"):
        run(job, *ORGANISM, f"model.path={retrained}", "dataset.limit=3")
    assert samples(job) == rows
    # a folder written when the organism had a source of its own (`source: organism`, no path) resumes too
    config = yaml.safe_load((job / "config.yaml").read_text())
    config["model"].update(source="organism", path=None)
    (job / "config.yaml").write_text(yaml.safe_dump(config))
    run(job, *ORGANISM, "dataset.limit=3")
    assert samples(job)[: len(rows)] == rows and len(samples(job)) == 3
    config["model"]["fingerprint"] = "other weights"
    (job / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(IncompatibleJobFolder, match="model.fingerprint"):
        run(job, *ORGANISM, "dataset.limit=3")


# ---- 3. one rule for which rows belong to a cell ----


def _report(folder: Path, tmp_path: Path):
    from kvexp.report import build_report

    return build_report([folder], tmp_path / "report")


def test_metrics_and_report_count_the_same_rows_after_a_lower_limit(tmp_path):
    job = tmp_path / "sweep" / "job"
    run(job, "dataset.limit=4")
    metrics = run(job, "dataset.limit=2")
    assert metrics["n"] == 2 and len(samples(job)) == 4  # nothing computed is lost
    result = _report(tmp_path / "sweep", tmp_path)
    (cell,) = result.results.values()
    assert len(cell.cell.rows) == metrics["n"] == load(job, "metrics.json")["n"]
    assert result.table("accuracy", "gsm8k").value("h2o", "B=128", "n") == 2
    assert any(i.kind == "extra rows" and "2 rows" in i.detail for i in result.issues), result.issues


# ---- smaller: a done cell with missing rows is marked in the table ----


def test_a_done_cell_with_missing_rows_is_marked_in_the_table(tmp_path):
    job = tmp_path / "sweep" / "job"
    run(job, "dataset.limit=3")
    lines = (job / "samples.jsonl").read_text().splitlines(keepends=True)
    (job / "samples.jsonl").write_text(lines[0] + "{not json\n" + lines[2])  # a corrupted middle line
    result = _report(tmp_path / "sweep", tmp_path)
    table = result.table("accuracy", "gsm8k")
    assert "†" in table.markdown().split("h2o", 1)[1].splitlines()[0], table.markdown()
    assert not next(iter(result.results.values())).cell.complete


# ---- 4. early signals and jobs that die without a word ----


def test_a_sigterm_while_the_job_starts_marks_it_preempted(tmp_path, monkeypatch):
    import kvexp.pipeline.job as job_module
    from kvexp.pipeline import JobInterrupted

    def interrupted(**kwargs):  # SIGTERM while run_meta.json is being gathered (git, package versions)
        raise JobInterrupted(signal.SIGTERM)

    monkeypatch.setattr(job_module, "run_meta", interrupted)
    with pytest.raises(JobInterrupted):
        run(tmp_path / "job")
    status = load(tmp_path / "job", "status.json")
    assert status["state"] == "preempted" and "SIGTERM" in status["error"]


def test_a_killed_job_reads_preempted_not_running_and_resumes(tmp_path, caplog):
    from kvexp.report.loading import load_job

    job = tmp_path / "job"
    args = [*FAST, "dataset.limit=3", "generation.batch_size=1", "generation.max_new_tokens=16", f"hydra.run.dir={job}"]
    proc = cli(*args)
    deadline = time.monotonic() + 120
    while not (job / "samples.jsonl").exists() or not (job / "samples.jsonl").read_text().count("\n"):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    proc.kill()  # kill -9: no handler runs, status.json stays `running`
    proc.communicate(timeout=60)
    assert load(job, "status.json")["state"] == "running"
    loaded = load_job(job)
    assert loaded.state == "preempted" and "died" in loaded.error_message

    with caplog.at_level("WARNING", logger="kvexp"):
        run_job(compose_config(args[:-1]), job)
    assert "died without finishing" in caplog.text
    assert_complete(job, 3)


# ---- 5. results others can read ----


def test_result_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        job = tmp_path / "job"
        run(job)
        (job / "samples.jsonl").write_text((job / "samples.jsonl").read_text() * 2)  # duplicates: rewritten
        run(job)
    finally:
        os.umask(old)
    for name in ("status.json", "metrics.json", "run_meta.json", "samples.jsonl"):
        assert stat.S_IMODE((job / name).stat().st_mode) == 0o644, name


def test_the_report_lists_an_unreadable_folder_and_goes_on(tmp_path, monkeypatch):
    run(tmp_path / "sweep" / "a")
    run(tmp_path / "sweep" / "b", "policy=knorm")
    private = tmp_path / "sweep" / "b" / "status.json"
    real = Path.read_text

    def read_text(self, *args, **kwargs):
        if self == private:  # what another user's 0600 file gives (the tests may run as root)
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    result = _report(tmp_path / "sweep", tmp_path)
    assert len(result.results) == 1
    (issue,) = [i for i in result.issues if i.kind == "unreadable"]
    assert "PermissionError" in issue.detail and issue.paths == [tmp_path / "sweep" / "b"]


# ---- 8. every failed cell of a basic-launcher sweep is listed ----


def test_a_basic_sweep_lists_every_failed_cell_and_the_finished_ones(tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(
        "-m",
        *FAST,
        "budget.tokens=128",
        "budget.slack=1,200,300",
        f"hydra.sweep.dir={sweep}",
        env_remove=("HYDRA_FULL_ERROR",),
    )
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1, out
    assert "2 of 3 cells failed (1 finished here)" in out, out
    for slack in (200, 300):
        assert f"h2o-b128-s{slack}  (job #" in out and f"got slack={slack}" in out, out
    table = out.split("(1 cells)", 1)[1]
    assert "tiny_random  gsm8k    h2o" in table, out


# ---- 9. stopping a local-launcher sweep stops its jobs ----


def test_sigterm_to_a_local_sweep_stops_its_jobs_and_a_rerun_resumes(tmp_path):
    sweep = tmp_path / "sweep"
    # enough rows that neither cell can finish between the other's first row and the signal
    problems = 40
    args = [
        "-m",
        "hydra/launcher=local",
        *FAST,
        "policy=h2o,knorm",
        f"dataset.limit={problems}",
        "generation.batch_size=1",
        "generation.max_new_tokens=48",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = cli(*args)
    folders = [sweep / "tiny_random" / "gsm8k" / f"{p}-b128-s1" for p in ("h2o", "knorm")]
    deadline = time.monotonic() + 180
    while not all((f / "samples.jsonl").exists() and (f / "samples.jsonl").read_text() for f in folders):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "stopped 2 running cell(s)" in out and f"hydra.sweep.dir={sweep}" in out, out
    for f in folders:  # each job was told, flushed and marked itself; none is left running
        assert load(f, "status.json")["state"] == "preempted", (f, out)
        assert 1 <= len(samples(f)) < problems

    rerun = cli(*args)
    out = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, out
    for f in folders:
        assert_complete(f, problems)


# ---- smaller: secrets typed on the command line, refused reruns, damaged files ----


def test_a_secret_typed_on_the_command_line_lands_in_no_file(tmp_path):
    secret = "cli_SECRET_value_0123456789"
    job = tmp_path / "job"
    proc = cli(*FAST, "logger=wandb", "logger.mode=offline", f"+model.hf_token={secret}", f"hydra.run.dir={job}")
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert (job / ".hydra" / "overrides.yaml").exists() and list((job / "wandb").glob("offline-run-*"))
    for path in job.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_a_refused_rerun_leaves_the_folders_records_alone(tmp_path):
    job = tmp_path / "job"
    proc = cli(*FAST, f"hydra.run.dir={job}")
    assert proc.communicate(timeout=300)[0] is not None and proc.returncode == 0
    before = {p.name: p.read_bytes() for p in (job / ".hydra").iterdir()}
    proc = cli(*FAST, "seed=7", f"hydra.run.dir={job}", env_remove=("HYDRA_FULL_ERROR",))
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1 and "different configuration" in out, out
    assert {p.name: p.read_bytes() for p in (job / ".hydra").iterdir()} == before


def test_a_damaged_trace_line_does_not_fail_a_finished_job(tmp_path):
    job = tmp_path / "job"
    run(job)
    lines = (job / "traces.jsonl").read_text().splitlines(keepends=True)
    (job / "traces.jsonl").write_text("".join([lines[0], "{damaged\n", *lines[1:]]))
    run(job)
    assert load(job, "status.json")["state"] == "done"
    assert len(read_jsonl(job / "traces.jsonl")) == len(lines)  # the damaged line is gone, the rest kept


def test_a_damaged_sample_line_fails_the_rerun_and_says_so_in_status(tmp_path):
    from kvexp.pipeline.folder import CorruptedFile

    job = tmp_path / "job"
    run(job, "dataset.limit=3")
    before = load(job, "status.json")
    lines = (job / "samples.jsonl").read_text().splitlines(keepends=True)
    (job / "samples.jsonl").write_text(lines[0] + "{damaged\n" + lines[2])
    with pytest.raises(CorruptedFile, match="line 2 is not JSON"):
        run(job, "dataset.limit=3")
    status = load(job, "status.json")
    assert status["state"] == "failed" and "line 2 is not JSON" in status["error"]
    # the rest of the record stays: the report picks the cell's rows by its targets
    for key in ("targets", "n_target", "started_at"):
        assert status[key] == before[key], key


def test_a_torn_last_line_is_reported_once(tmp_path, caplog):
    job = tmp_path / "job"
    run(job, "dataset.limit=3")
    text = (job / "samples.jsonl").read_text()
    (job / "samples.jsonl").write_text(text[: text.rindex("\n", 0, len(text) - 1) + 20])  # a torn last row
    with caplog.at_level("WARNING"):
        run(job, "dataset.limit=3")
    assert caplog.text.count("dropping a torn last line") == 1, caplog.text
    assert_complete(job, 3)


def test_a_local_sweep_leaves_no_empty_template_folder(tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("-m", "hydra/launcher=local", *FAST, "dataset.limit=1", "policy=h2o,knorm", f"hydra.sweep.dir={sweep}")
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    logs = sorted(p.name for p in (sweep / ".submitit").iterdir())
    assert len(logs) == 2 and not any("%" in name for name in logs), logs


# ---- positions past the model's, full disks, signals in pairs, busy cells, progress (issue 22) ----


def test_a_job_warns_once_and_stops_rows_at_the_models_positions(tmp_path, caplog):
    job = tmp_path / "job"
    overrides = ["model.tiny.max_position_embeddings=300", "dataset=chain", "dataset.limit=3"]
    overrides += ["generation.max_new_tokens=200", "policy=h2o", "budget.tokens=64"]
    with caplog.at_level("WARNING", logger="kvexp"):
        metrics = run(job, *overrides)
    warnings = [r.getMessage() for r in caplog.records if "max_position_embeddings" in r.getMessage()]
    assert len(warnings) == 1 and "generation.max_new_tokens=200" in warnings[0], warnings
    assert "max_position_embeddings=300" in warnings[0] and "plus generation.max_new_tokens=200 is" in warnings[0]
    rows = samples(job)
    assert all(r["n_prompt_tokens"] + r["n_output_tokens"] <= 300 for r in rows)
    stopped = [r for r in rows if r["stop_reason"] == "max_positions"]
    assert stopped and all(r["n_prompt_tokens"] + r["n_output_tokens"] == 300 for r in stopped)
    assert metrics["stop_reasons"].get("max_positions") == len(stopped)
    assert metrics["truncation_rate"] == pytest.approx(len(stopped) / len(rows))


SIGNAL_PAIRS = [(signal.SIGTERM, signal.SIGINT), (signal.SIGINT, signal.SIGTERM)]


@pytest.mark.parametrize("first, second", SIGNAL_PAIRS)
def test_a_second_signal_during_the_preempted_write_is_ignored(tmp_path, monkeypatch, request, first, second):
    """The race made certain: the second signal of a pair arrives while status.json is being marked
    preempted (it used to raise there, and status.json stayed `running`)."""
    import kvexp.pipeline.job as job_module
    from kvexp.pipeline import JobInterrupted
    from kvexp.pipeline.progress import Progress

    real_update, real_write = Progress.update, job_module.write_json
    sent = []

    def update_then_signal(self, *args, **kwargs):
        real_update(self, *args, **kwargs)
        if not sent:
            sent.append(first)
            os.kill(os.getpid(), first)

    def write_during_second_signal(path, obj):
        if path.name == "status.json" and obj.get("state") == "preempted" and len(sent) == 1:
            sent.append(second)
            os.kill(os.getpid(), second)  # its handler runs inside the write below
        real_write(path, obj)

    monkeypatch.setattr(Progress, "update", update_then_signal)
    monkeypatch.setattr(job_module, "write_json", write_during_second_signal)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, also under `&`
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    with pytest.raises((JobInterrupted, KeyboardInterrupt)):
        run(tmp_path / "job", "dataset.limit=4", "generation.batch_size=1")
    assert sent == [first, second]
    status = load(tmp_path / "job", "status.json")
    assert status["state"] == "preempted" and signal.Signals(first).name in status["error"], status
    assert 1 <= len(samples(tmp_path / "job")) < 4


@pytest.mark.parametrize("delay_ms", [0, 2])
@pytest.mark.parametrize("first, second", SIGNAL_PAIRS)
def test_any_pair_of_sigint_and_sigterm_leaves_the_job_preempted_with_its_rows(tmp_path, first, second, delay_ms):
    """What a job of a local sweep gets on Ctrl-C: SIGINT from the terminal and SIGTERM from submitit, in
    either order and close together; it exits as interrupted, never killed by the second one."""
    job = tmp_path / "job"
    args = [*FAST, "dataset.limit=6", "generation.batch_size=1", "generation.max_new_tokens=32", f"hydra.run.dir={job}"]
    proc = cli(*args)
    deadline = time.monotonic() + 120
    while not (job / "samples.jsonl").exists() or not (job / "samples.jsonl").read_text().count("\n"):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.02)
    proc.send_signal(first)
    time.sleep(delay_ms / 1000)
    proc.send_signal(second)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode in (130, 128 + signal.SIGTERM), out
    status = load(job, "status.json")
    assert status["state"] == "preempted", (status, out)
    assert "interrupted by SIG" in status["error"], (status, out)  # both pending: Python handles SIGINT first
    rows = samples(job)
    assert 1 <= len(rows) < 6 and len({(r["id"], r["sample_idx"]) for r in rows}) == len(rows)


def test_a_full_disk_fails_the_job_naming_the_file_and_status_json_says_so(tmp_path, monkeypatch, caplog):
    from fakedisk import FullDisk

    from kvexp.files import DiskFull
    from kvexp.report.loading import load_job

    job = tmp_path / "job"
    args = ["dataset.limit=6", "generation.batch_size=1", "trace.n_problems=0"]
    FullDisk(after_rows=2).install(monkeypatch)
    with pytest.raises(DiskFull) as info:
        run(job, *args)
    assert str(info.value) == f"cannot write {job / 'samples.jsonl'}: no space left on device"
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chain of tracebacks
    status = load(job, "status.json")
    assert status["state"] == "failed" and status["traceback"] is None, status
    assert f"cannot write {job / 'samples.jsonl'}: no space left on device" in status["error"]
    assert not (job / ".status.reserve").exists()
    assert len(samples(job)) == 2
    loaded = load_job(job)  # the report: a disk failure, not a kill
    assert loaded.state == "failed" and "no space left on device" in loaded.error_message

    monkeypatch.undo()  # space freed: the rerun says how the last run ended and resumes exactly
    with caplog.at_level("WARNING", logger="kvexp"):
        run(job, *args)
    assert "the run before this one failed (DiskFull: cannot write" in caplog.text
    assert "died without" not in caplog.text
    assert_complete(job, 6)


RUN_KVEXP_MAIN = "import runpy; runpy.run_module('kvexp.main', run_name='__main__', alter_sys=True)"


def test_a_job_on_a_full_disk_says_so_in_one_line(tmp_path):
    job = tmp_path / "job"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import fakedisk; fakedisk.install_in_subprocess(); " + RUN_KVEXP_MAIN]
        + [*FAST, "dataset.limit=4", "generation.batch_size=1", "trace.n_problems=0", f"hydra.run.dir={job}"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent), "KVEXP_TEST_FULL_AFTER_ROWS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, out
    assert "Traceback" not in out, out
    (line,) = [line for line in out.splitlines() if "no space left on device" in line]
    assert line.startswith(f"kvexp: cannot write {job / 'samples.jsonl'}: no space left on device"), out
    assert load(job, "status.json")["state"] == "failed"


def test_a_cell_that_failed_before_its_config_was_written_is_in_the_report(tmp_path, monkeypatch):
    from fakedisk import FullDisk

    sweep = tmp_path / "sweep"
    run(sweep / "tiny_random" / "gsm8k" / "h2o-b128-s1")
    FullDisk(after_replaces=1).install(monkeypatch)  # room for the first status.json, then none
    lost = sweep / "tiny_random" / "gsm8k" / "knorm-b128-s1"
    with pytest.raises(OSError, match="no space left on device"):
        run(lost, "policy=knorm")
    monkeypatch.undo()
    assert not (lost / "config.yaml").exists()
    status = load(lost, "status.json")  # written from the space the job held for it
    assert status["state"] == "failed" and f"cannot write {lost / 'config.yaml'}" in status["error"], status
    result = _report(sweep, tmp_path)
    (issue,) = [i for i in result.issues if i.paths == [lost]]
    assert issue.kind == "failed" and "no space left on device" in issue.detail
    assert "tiny_random/gsm8k/knorm-b128-s1" in (tmp_path / "report" / "report.md").read_text()


def test_the_report_on_a_full_disk_says_it_cannot_write_its_output_in_one_line(tmp_path, monkeypatch, capsys):
    import builtins

    import kvexp.report.tables
    from kvexp.report.cli import main as report_main

    run(tmp_path / "sweep" / "a")

    def no_space(path, mode="r", *args, **kwargs):
        if "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(kvexp.report.tables, "open", no_space, raising=False)
    assert report_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"kvexp.report: error: cannot write the report's output in {tmp_path / 'out'}: no space left on device; "
        "free space there or pass --out OUTDIR"
    )


@pytest.mark.parametrize("launcher", ["basic", "local"])
def test_a_cell_held_by_another_run_is_running_elsewhere_not_failed(tmp_path, launcher):
    from kvexp.launch.launcher import EXIT_RUNNING_ELSEWHERE
    from kvexp.pipeline import JobFolder

    sweep = tmp_path / "sweep"
    held = JobFolder(sweep / "tiny_random" / "gsm8k" / "knorm-b128-s1")
    with held.locked():  # another sweep into the same folder runs this cell right now
        proc = cli("-m", f"hydra/launcher={launcher}", *FAST, "policy=h2o,knorm", f"hydra.sweep.dir={sweep}")
        out = proc.communicate(timeout=300)[0]
    assert proc.returncode == EXIT_RUNNING_ELSEWHERE, out
    assert "1 of 2 running elsewhere (1 finished here)" in out, out
    assert "cells failed" not in out and "Failed cells" not in out and "FAILED" not in out, out
    assert "knorm-b128-s1" in out.split("Running elsewhere", 1)[1] and f"pid {os.getpid()}" in out, out
    assert_complete(sweep / "tiny_random" / "gsm8k" / "h2o-b128-s1", 2)


def test_a_single_run_whose_folder_is_held_elsewhere_says_so_in_one_line(tmp_path):
    from kvexp.launch.launcher import EXIT_RUNNING_ELSEWHERE
    from kvexp.pipeline import JobFolder

    job = tmp_path / "job"
    with JobFolder(job).locked():
        proc = cli(*FAST, f"hydra.run.dir={job}", env_remove=("HYDRA_FULL_ERROR",))
        out = proc.communicate(timeout=120)[0]
    assert proc.returncode == EXIT_RUNNING_ELSEWHERE, out
    assert "Traceback" not in out and f"kvexp: {job} is being run by another process (pid {os.getpid()}" in out, out


def test_the_reports_wandb_summary_falls_back_offline_when_wandb_is_unreachable(tmp_path):
    """W&B online without a reachable server: the report writes its files, waits logger.init_timeout for
    the server like the jobs do, and logs the summary offline under the report folder, where
    jobs/sync_wandb.sh finds it (every `wandb` folder below the sweep)."""
    sweep = tmp_path / "sweep"
    run(sweep / "a", "logger=wandb", "logger.mode=offline", "logger.init_timeout=2")
    env = {
        **os.environ,
        "WANDB_MODE": "online",
        "WANDB_BASE_URL": DEAD_SERVER,
        "WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567",
        "HOME": str(tmp_path / "home"),
        "WANDB_CONFIG_DIR": str(tmp_path / "home" / ".config" / "wandb"),
    }
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "kvexp.report", str(sweep), "--wandb"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert time.monotonic() - start < 60, out  # not wandb's own 90 s wait and more
    assert "logger.init_timeout=2s" in out and "logging offline" in out, out
    assert (sweep / "report" / "report.md").is_file() and (sweep / "report" / "cells.csv").is_file()
    (offline,) = (sweep / "report" / "wandb").glob("offline-run-*")
    assert f"W&B: {offline}" in out, out


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_progress_counts_unfinished_rows_and_estimates_the_time_left(monkeypatch, caplog):
    import kvexp.pipeline.progress as progress_module

    clock = FakeClock()
    monkeypatch.setattr(progress_module.time, "perf_counter", clock)
    progress = progress_module.Progress(problems=10, rows=10, samples_per_problem=1, max_new_tokens=100)
    with caplog.at_level("INFO", logger="kvexp.progress"):
        clock.now += 4.0
        progress.decoding(sampled=32, live_rows=4)
        assert not caplog.records  # not before FIRST_UPDATE_S
        clock.now += 1.5  # 5.5 s after decoding started: the first line, with no row finished yet
        progress.decoding(sampled=40, live_rows=4)
        (line,) = [r.getMessage() for r in caplog.records]
        # no row finished: every row is taken to need max_new_tokens; 6 waiting, 4 decoding with 40 so far
        left = (6 * 100 + 4 * 100 - 40) / (40 / 5.5)
        assert "0/10 samples, 40 tokens (4 rows decoding), 7.3 tokens/s" in line, line
        assert f"about {progress_module._duration(left)} left" in line and left > 60, line
        caplog.clear()
        clock.now += 0.5
        progress.update("p0", 20)  # a row finished with 20 tokens: the others are taken to need as many
        clock.now += 10.0
        progress.decoding(sampled=90, live_rows=4)
        (line,) = [r.getMessage() for r in caplog.records]
        left = (5 * 20 + max(0, 4 * 20 - (90 - 20))) / (90 / 16.0)
        assert (
            "1/10 samples, 90 tokens (4 rows decoding)" in line and f"about {progress_module._duration(left)}" in line
        )


def test_a_job_shows_progress_while_rows_decode_before_any_finishes(tmp_path, monkeypatch, caplog):
    import kvexp.pipeline.progress as progress_module

    monkeypatch.setattr(progress_module, "FIRST_UPDATE_S", 0.0)  # a line after every forward pass
    monkeypatch.setattr(progress_module, "INTERVAL_S", 0.0)
    with caplog.at_level("INFO", logger="kvexp.progress"):
        run(tmp_path / "job", "dataset.limit=4", "generation.batch_size=4", "generation.max_new_tokens=16")
    lines = [r.getMessage() for r in caplog.records if r.name == "kvexp.progress"]
    moving = [line for line in lines if "0/4 samples" in line and "0/4 samples, 0 tokens" not in line]
    assert len(moving) >= 10, lines  # one line per decode step before the rows finish together
    assert "(4 rows decoding)" in moving[0] and "tokens/s, about" in moving[0] and " left" in moving[0], moving


def test_the_progress_observer_adds_no_host_synchronisation(llama, monkeypatch):
    """Whatever the progress reads after a decode step comes from the host: the engine reads the device
    back exactly as often with it as without it."""
    import torch
    from engine_models import prompt

    from kvexp.engine import Budget, Engine, GenerationSettings, Request
    from kvexp.pipeline.progress import Progress
    from kvexp.policies import build_policy

    reads = []
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor, name, lambda self, *a, _real=real, _n=name, **k: reads.append(_n) or _real(self, *a, **k)
        )

    def generate(watched: bool) -> tuple[list, int, tuple[int, int]]:
        engine = Engine(llama, build_policy("h2o"), Budget(16), GenerationSettings(max_new_tokens=24, batch_size=2))
        progress = Progress(problems=3, rows=3, samples_per_problem=1, max_new_tokens=24)
        if watched:
            engine.observer = progress.watch(engine)
        reads.clear()
        outs = [o.output_ids for o in engine.generate([Request(i, prompt(12, seed=i)) for i in range(3)])]
        return outs, len(reads), (engine.generated_tokens, progress.sampled)

    plain, plain_reads, _ = generate(False)
    watched, watched_reads, (generated, seen) = generate(True)
    assert watched == plain and watched_reads == plain_reads > 0
    # the engine's host count; the progress saw it after each forward pass (the last sampling has none after it)
    assert generated == sum(len(o) for o in plain) and generated - 2 <= seen < generated
