"""The job pipeline end to end with the tiny random model: job folder contents (README, "Reading results"),
resume, interruption, error rows, cheap validation before the model loads, the mission sweep on the
command line, experiment files, W&B offline output, and one real SmolLM2 run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import sweeps
from omegaconf import OmegaConf

from kvexp.models import ModelPreset, ModelSource, encode_prompt, format_prompt
from kvexp.pipeline import IncompatibleJobFolder, JobFolder, JobFolderBusy, read_jsonl, run_job
from kvexp.pipeline.config import CONFIG_DIR, compose_config
from kvexp.pipeline.folder import scan_jsonl

REPO = CONFIG_DIR.parent
FAST = ["model=tiny_random", "logger=none", "dataset.limit=2", "generation.max_new_tokens=8"]
SAMPLE_FIELDS = {
    "id",
    "sample_idx",
    "prompt",
    "output",
    "output_ids",
    "prediction",
    "gold",
    "correct",
    "n_prompt_tokens",
    "n_output_tokens",
    "stop_reason",
    "peak_resident_tokens",
    "n_evicted_tokens",
    "kv_bytes_peak",
    "prefill_s",
    "decode_s",
    "prompt_kept_share",
    "prompt_kept_any",
    "error",
}
METRIC_FIELDS = {
    "model",
    "dataset",
    "policy",
    "budget",
    "n",
    "n_errors",
    "accuracy",
    "accuracy_ci95",
    "mean_output_tokens",
    "truncation_rate",
    "decode_tokens_per_s",
    "kv_bytes_peak",
    "prompt_kept_share",
    "prompt_kept_any",
}
JOB_FILES = {"config.yaml", "samples.jsonl", "metrics.json", "status.json", "run_meta.json", "traces.jsonl"}


def cfg(*overrides: str):
    return compose_config([*FAST, *overrides])


def run(job_dir: Path, *overrides: str) -> dict:
    return run_job(cfg(*overrides), job_dir)


def samples(job_dir: Path) -> list[dict]:
    return read_jsonl(job_dir / "samples.jsonl")


def load(job_dir: Path, name: str):
    return json.loads((job_dir / name).read_text())


def keys(rows: list[dict]) -> list[tuple]:
    return [(r["id"], r["sample_idx"]) for r in rows]


def cli(*args: str, cwd: Path = REPO, env_overrides: dict | None = None, env_remove=(), **popen) -> subprocess.Popen:
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HYDRA_FULL_ERROR": "1",
        **(env_overrides or {}),
    }
    for name in env_remove:
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "kvexp.main", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def tiny_preset() -> ModelPreset:
    return ModelPreset.from_cfg(OmegaConf.to_container(cfg().model, resolve=True))


def tiny_tokenizer():
    return ModelSource(tiny_preset()).load().tokenizer


def assert_complete(job_dir: Path, n_rows: int) -> list[dict]:
    """A finished job folder: every file, every field, no duplicate rows."""
    assert JOB_FILES <= {p.name for p in job_dir.iterdir()}, sorted(p.name for p in job_dir.iterdir())
    rows = samples(job_dir)
    assert len(rows) == n_rows and len(set(keys(rows))) == n_rows
    assert all(SAMPLE_FIELDS <= set(r) for r in rows)
    assert METRIC_FIELDS <= set(load(job_dir, "metrics.json"))
    status = load(job_dir, "status.json")
    assert status["state"] == "done" and status["n_done"] == n_rows and status["n_pending"] == 0
    return rows


# ---- one job ----


def test_job_folder_holds_every_contracted_file(tmp_path):
    job = tmp_path / "job"
    metrics = run(job, "trace.n_problems=1")
    rows = assert_complete(job, 2)
    assert not (job / "wandb").exists()  # logger=none writes no W&B files

    assert metrics == load(job, "metrics.json")
    assert (metrics["model"], metrics["dataset"], metrics["policy"], metrics["budget"]) == (
        "tiny_random",
        "gsm8k",
        "h2o",
        128,
    )
    assert metrics["n"] == 2 and metrics["n_errors"] == 0 and 0 <= metrics["accuracy"] <= 1
    lo, hi = metrics["accuracy_ci95"]
    assert lo <= metrics["accuracy"] <= hi
    assert metrics["truncation_rate"] == 1.0 and metrics["mean_output_tokens"] == 8
    assert metrics["kv_bytes_peak"] > 0 and metrics["decode_tokens_per_s"] > 0

    # the prompt is the exact model input: tokenizing it gives back the prompt ids
    tokenizer = tiny_tokenizer()
    for row in rows:
        assert row["prompt"].endswith("<|im_start|>assistant\n")
        assert len(encode_prompt(tokenizer, row["prompt"])) == row["n_prompt_tokens"]
        assert row["n_output_tokens"] == len(row["output_ids"]) == 8 and row["stop_reason"] == "max_new_tokens"
        assert row["peak_resident_tokens"] <= 128 and row["error"] is None and isinstance(row["correct"], bool)

    # config.yaml is resolved (no interpolations left) and matches the run
    config = OmegaConf.load(job / "config.yaml")
    assert "${" not in (job / "config.yaml").read_text()
    assert config.policy.name == "h2o" and config.generation.temperature == 0.0

    meta = load(job, "run_meta.json")
    assert {"git", "packages", "host", "device", "python"} <= set(meta)
    assert meta["packages"]["torch"] and meta["device"]["device"] == "cpu"

    traces = read_jsonl(job / "traces.jsonl")
    assert traces and {t["id"] for t in traces} == {rows[0]["id"]}  # only the first problem is traced
    assert [t["step"] for t in traces] == sorted(t["step"] for t in traces)
    assert {"resident_tokens", "evicted_tokens", "prompt_resident_share"} <= set(traces[0])


def test_full_cache_records_a_null_budget(tmp_path):
    metrics = run(tmp_path / "job", "policy=full")
    assert metrics["policy"] == "full" and metrics["budget"] is None and metrics["cell"] == "full"
    rows = samples(tmp_path / "job")
    assert all(r["n_evicted_tokens"] == 0 and r["peak_resident_tokens"] == r["n_prompt_tokens"] + 7 for r in rows)


def test_samples_do_not_depend_on_batch_layout(tmp_path):
    sampled = ["generation.temperature=1.0", "generation.num_samples=2", "generation.max_new_tokens=6"]
    run(tmp_path / "a", *sampled, "generation.batch_size=1")
    run(tmp_path / "b", *sampled, "generation.batch_size=4")
    a, b = samples(tmp_path / "a"), samples(tmp_path / "b")
    assert len(a) == 4 and keys(a) == keys(b)
    assert [r["output_ids"] for r in a] == [r["output_ids"] for r in b]
    assert len({r["seed"] for r in a}) == 4


# ---- resume ----


def test_resume_drops_a_torn_line_and_duplicates_nothing(tmp_path):
    job = tmp_path / "job"
    run(job, "dataset.limit=3")
    original = samples(job)
    lines = (job / "samples.jsonl").read_text().splitlines(keepends=True)
    # the job died while writing its last row
    (job / "samples.jsonl").write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    run(job, "dataset.limit=3")
    resumed = assert_complete(job, 3)
    assert resumed[:2] == original[:2]  # finished rows are kept as they were
    assert resumed[2]["output_ids"] == original[2]["output_ids"]  # the lost one ran again, identically
    traces = read_jsonl(job / "traces.jsonl")
    assert len(traces) == len({(t["id"], t["step"]) for t in traces})  # no duplicated trace rows


@pytest.mark.parametrize(
    "content, kept, left",
    [
        (b'{"a": 1}\n{"a": 2}\n', [1, 2], b'{"a": 1}\n{"a": 2}\n'),
        (b'{"a": 1}\n{"a": 2}\n{"a', [1, 2], b'{"a": 1}\n{"a": 2}\n'),  # torn mid-row
        (b'{"a": 1}\n{"a": 2}', [1], b'{"a": 1}\n'),  # the newline never made it
        (b'{"a": 1}\n{"a\n', [1], b'{"a": 1}\n'),  # garbage last line
        (b"", [], b""),
    ],
)
def test_read_jsonl_cuts_a_torn_last_line(tmp_path, content, kept, left):
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    assert [r["a"] for r in read_jsonl(path, repair=True)] == kept
    assert path.read_bytes() == left


def test_read_jsonl_refuses_a_corrupted_middle(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\nnot json\n[3]\n{"a": 2}\n{"a')
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(path)
    # auxiliary files (traces) and the report leave bad lines out instead; the one reader says which
    assert [r["a"] for r in read_jsonl(path, skip_bad=True)] == [1, 2]
    scanned = scan_jsonl(path)
    assert [r["a"] for r in scanned.rows] == [1, 2]
    assert [n for n, _ in scanned.bad_lines] == [2, 3] and scanned.torn
    assert path.read_bytes().endswith(b'{"a')  # reading without repair leaves the file alone


def test_resume_extends_a_job_to_more_problems(tmp_path):
    job = tmp_path / "job"
    run(job, "dataset.limit=1")
    first = samples(job)
    metrics = run(job, "dataset.limit=3")
    rows = assert_complete(job, 3)
    assert rows[0] == first[0] and metrics["n"] == 3


def test_rerun_of_a_finished_job_does_not_load_the_model(tmp_path, monkeypatch):
    job = tmp_path / "job"
    run(job)
    monkeypatch.setattr(ModelSource, "load", lambda self: pytest.fail("model loaded for a finished job"))
    assert run(job)["n"] == 2


def test_a_folder_of_another_config_is_refused(tmp_path):
    job = tmp_path / "job"
    run(job)
    with pytest.raises(IncompatibleJobFolder, match="generation.max_new_tokens"):
        run(job, "generation.max_new_tokens=9")
    assert load(job, "status.json")["state"] == "done"  # the refused run touched nothing


def test_a_folder_without_rows_can_be_rerun_with_a_fixed_config(tmp_path):
    with pytest.raises(Exception, match="raise budget.tokens"):
        run(tmp_path / "job", "policy.window=200")
    run(tmp_path / "job")
    assert_complete(tmp_path / "job", 2)


def test_a_folder_in_use_is_refused(tmp_path):
    job = tmp_path / "job"
    with JobFolder(job).locked():
        with pytest.raises(JobFolderBusy, match="another process"):
            run(job)


def test_the_full_cache_relaunched_at_another_budget_reuses_its_run(tmp_path, monkeypatch):
    """`policy=full,h2o budget=16,32` launches the full cache twice into one folder (it ignores the
    budget): the second launch generates nothing and opens no second W&B run."""
    job = tmp_path / "full"
    first = run(job, "policy=full", "budget.tokens=16")
    monkeypatch.setattr(ModelSource, "load", lambda self: pytest.fail("model loaded for a finished full cache"))
    wandb = ["logger=wandb", "logger.mode=offline"]
    again = run(job, "policy=full", "budget.tokens=32", *wandb)  # first W&B logging of this folder: a run
    again = run(job, "policy=full", "budget.tokens=64", *wandb)  # logged already: none
    assert [again[k] for k in ("n", "accuracy", "budget", "cell")] == [
        first[k] for k in ("n", "accuracy", "budget", "cell")
    ]
    assert_complete(job, 2)
    assert len(list((job / "wandb").glob("offline-run-*"))) == 1


def test_the_full_cache_records_no_budget_and_resumes_folders_that_did(tmp_path, monkeypatch):
    """config.yaml of the full cache holds budget null whatever it was launched with (`budget=16` here),
    so readers key on that; a folder written before, holding its launched budget, still resumes."""
    job = tmp_path / "full"
    first = run(job, "policy=full", "budget.tokens=16", "budget.slack=4")
    config = OmegaConf.load(job / "config.yaml")
    assert OmegaConf.to_container(config.budget) == {"tokens": None, "slack": None, "schedule": None}
    assert run_job(cfg("policy=h2o", "budget.tokens=16"), tmp_path / "h2o")["budget"] == 16
    assert OmegaConf.load(tmp_path / "h2o" / "config.yaml").budget.tokens == 16
    config.budget = {"tokens": 16, "slack": 4}  # as folders were written before (and before budget.schedule)
    OmegaConf.save(config, job / "config.yaml")
    monkeypatch.setattr(ModelSource, "load", lambda self: pytest.fail("model loaded for a finished full cache"))
    again = run(job, "policy=full", "budget.tokens=32")
    assert [again[k] for k in ("n", "accuracy", "budget", "slack")] == [
        first[k] for k in ("n", "accuracy", "budget", "slack")
    ]


def test_budget_schedule_is_recorded_and_a_folder_from_before_it_resumes_as_cap(tmp_path, monkeypatch):
    job = tmp_path / "h2o"
    first = run(job, "policy=h2o", "budget.tokens=16")
    config = OmegaConf.load(job / "config.yaml")
    assert config.budget.schedule == "cap" and first["schedule"] == "cap"
    del config.budget["schedule"]  # written before budget.schedule existed: it ran the cap schedule
    OmegaConf.save(config, job / "config.yaml")
    monkeypatch.setattr(ModelSource, "load", lambda self: pytest.fail("model loaded for a finished folder"))
    assert run(job, "policy=h2o", "budget.tokens=16")["accuracy"] == first["accuracy"]
    with pytest.raises(IncompatibleJobFolder, match="budget.schedule"):
        run(job, "policy=h2o", "budget.tokens=16", "budget.schedule=interval")
    monkeypatch.undo()
    other = run(tmp_path / "interval", "policy=h2o", "budget.tokens=16", "budget.slack=4", "budget.schedule=interval")
    assert other["schedule"] == "interval" and other["cell"] == "h2o-b16-s4-interval"


def test_a_busy_full_cache_folder_is_left_to_a_job_of_the_same_config(tmp_path, monkeypatch):
    """Launched in parallel (SLURM, submitit_local) the full cache's launches race for its folder: the
    losers leave it to the job that runs the same config, and only to that one."""
    job = tmp_path / "full"
    run(job, "policy=full", "budget.tokens=16")
    with JobFolder(job).locked():
        # the holder's config.yaml is there: it is read, not waited for
        monkeypatch.setattr("kvexp.pipeline.job.time.sleep", lambda s: pytest.fail("waited for config.yaml"))
        assert run(job, "policy=full", "budget.tokens=32") == {}
        with pytest.raises(JobFolderBusy, match="another process"):
            run(job, "policy=full", "generation.max_new_tokens=9")  # another config: a real conflict
        with pytest.raises(JobFolderBusy, match="another process"):
            run(job, "policy=h2o")
    assert load(job, "status.json")["state"] == "done"
    # a holder that has not written its config.yaml yet is waited for, then not trusted
    from kvexp.pipeline.job import _runs_the_same

    monkeypatch.undo()
    assert not _runs_the_same(JobFolder(tmp_path / "empty"), {}, wait_s=0.2)


def test_sigterm_marks_preempted_and_a_rerun_resumes(tmp_path):
    job = tmp_path / "job"
    args = [*FAST, "dataset.limit=3", "generation.batch_size=1", "generation.max_new_tokens=16", f"hydra.run.dir={job}"]
    proc = cli(*args)
    deadline = time.monotonic() + 60
    while not (job / "samples.jsonl").exists() or not (job / "samples.jsonl").read_text().count("\n"):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out
    status = load(job, "status.json")
    assert status["state"] == "preempted" and "SIGTERM" in status["error"]
    done_before = samples(job)
    assert 1 <= len(done_before) < 3

    run_job(compose_config(args[:-1]), job)  # the rerun (same config, same folder) resumes
    rows = assert_complete(job, 3)
    assert rows[: len(done_before)] == done_before


# ---- errors ----


def _prompt_lengths(n: int) -> list[int]:
    from kvexp.data import load_problems

    preset, tokenizer = tiny_preset(), tiny_tokenizer()
    return [
        len(encode_prompt(tokenizer, format_prompt(tokenizer, preset, p.question)))
        for p in load_problems("gsm8k", limit=n)
    ]


def test_a_sample_that_fails_is_an_error_row_and_the_job_goes_on(tmp_path):
    short, long = sorted(_prompt_lengths(2))
    assert short < long
    budget = (short + long) // 2  # the pinned prompt of one problem fits, the other does not
    metrics = run(tmp_path / "job", "policy=knorm", "policy.protect_prompt=true", f"budget.tokens={budget}")
    rows = assert_complete(tmp_path / "job", 2)
    errors = [r for r in rows if r["error"]]
    assert len(errors) == 1 and "prompt does not fit" in errors[0]["error"] and errors[0]["n_prompt_tokens"] == long
    assert errors[0]["correct"] is False and errors[0]["output_ids"] == []
    assert metrics["n_errors"] == 1 and metrics["n"] == 2


def test_a_grader_that_raises_makes_an_error_row(tmp_path, monkeypatch):
    import kvexp.grading

    def broken(dataset, response, gold):
        raise ZeroDivisionError("grader bug")

    monkeypatch.setattr(kvexp.grading, "grade", broken)
    with pytest.raises(RuntimeError, match="every sample failed"):
        run(tmp_path / "job")
    rows = samples(tmp_path / "job")
    assert len(rows) == 2 and all("grading failed: ZeroDivisionError" in r["error"] for r in rows)
    status = load(tmp_path / "job", "status.json")
    assert status["state"] == "failed" and "every sample failed" in status["error"]


def test_retry_errors_reruns_only_error_rows(tmp_path, monkeypatch):
    import kvexp.grading

    real = kvexp.grading.grade
    calls = []

    def flaky(dataset, response, gold):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("transient")
        return real(dataset, response, gold)

    monkeypatch.setattr(kvexp.grading, "grade", flaky)
    run(tmp_path / "job")
    assert sum(r["error"] is not None for r in samples(tmp_path / "job")) == 1
    run(tmp_path / "job")  # error rows count as finished by default
    assert len(calls) == 2
    run(tmp_path / "job", "resume.retry_errors=true")
    rows = assert_complete(tmp_path / "job", 2)
    assert len(calls) == 3 and all(r["error"] is None for r in rows)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["dataset.limit=0"], "limit must be a positive integer"),
        (["dataset.shard.index=2", "dataset.shard.count=2"], "shard index"),
        (["policy.window=200"], "raise budget.tokens"),
        (["budget.slack=128"], "budget.slack"),
        (["policy.name=nosuch"], "valid policies: full, streaming_llm"),
        (["policy=h2o", "budget=none"], "needs a token budget"),
        (["generation.num_samples=0"], "num_samples"),
        (
            ["generation.num_samples=2", "generation.temperature=1", "metrics.pass_k=[1,4]"],
            r"metrics.pass_k has k=\[4\]",
        ),
        (["model.path=/nonexistent/model"], "/nonexistent/model"),
        (["dataset=folio"], "unavailable"),
    ],
)
def test_bad_input_fails_before_the_model_loads(tmp_path, monkeypatch, overrides, message):
    monkeypatch.setattr(ModelSource, "load", lambda self: pytest.fail("the model loaded before validation"))
    with pytest.raises(Exception, match=message):
        run(tmp_path / "job", *overrides)
    status = load(tmp_path / "job", "status.json")
    assert status["state"] == "failed" and message.split()[0] in status["error"] and status["traceback"]


def test_secrets_are_never_written(tmp_path, monkeypatch):
    secret = "hf_SECRETtoken1234567890"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    run_job(cfg("logger=wandb", "logger.mode=offline", f"+model.hf_token={secret}"), tmp_path / "job")
    assert (tmp_path / "job" / "wandb").is_dir()
    for path in (tmp_path / "job").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data and b"0123456789abcdef0123456789abcdef" not in data, path


def test_mission_sweep_on_the_command_line(tmp_path):
    proc = cli(
        "-m",
        "policy=h2o,snapkv",
        "budget=128,512",
        "model=tiny_random",
        "dataset.limit=2",
        "generation.max_new_tokens=8",
        f"hydra.sweep.dir={tmp_path}/sweep",
    )
    out = proc.communicate(timeout=170)[0]
    assert proc.returncode == 0, out
    cells = sorted(p.parent for p in (tmp_path / "sweep").rglob("metrics.json"))
    assert [c.relative_to(tmp_path / "sweep").as_posix() for c in cells] == [
        f"tiny_random/gsm8k/{p}-b{b}-s1" for p in ("h2o", "snapkv") for b in (128, 512)
    ]
    for cell in cells:
        assert_complete(cell, 2)
        metrics = load(cell, "metrics.json")
        assert f"{metrics['policy']}-b{metrics['budget']}-s1" == cell.name
        runs = list((cell / "wandb").glob("offline-run-*"))
        assert len(runs) == 1 and list(runs[0].glob("*.wandb")), "W&B offline run files"
        tables = {p.name.split("_")[0] for p in runs[0].rglob("*.table.json")}
        assert {"samples", "traces"} <= tables
    assert "kvexp sweep" in out  # the sweep's summary table


def test_swept_keys_outside_the_cell_name_get_their_own_folders(tmp_path):
    """policy.window=16,32 used to send both jobs into h2o-b128-s1, where the second refused the first's
    rows after the first had run; now each value has its folder, named after it."""
    proc = cli(
        "-m",
        "policy=h2o",
        "policy.window=16,32",
        "seed=0,1",
        "model=tiny_random",
        "dataset.limit=2",
        "generation.max_new_tokens=8",
        "logger=none",
        f"hydra.sweep.dir={tmp_path}/sweep",
    )
    out = proc.communicate(timeout=170)[0]
    assert proc.returncode == 0, out
    cells = sorted(p.parent.name for p in (tmp_path / "sweep").rglob("metrics.json"))
    assert cells == [f"h2o-b128-s1,policy.window={w},seed={seed}" for w in (16, 32) for seed in (0, 1)], out
    for name in cells:
        job = tmp_path / "sweep" / "tiny_random" / "gsm8k" / name
        assert_complete(job, 2)
        config = OmegaConf.load(job / "config.yaml")
        assert f"policy.window={config.policy.window},seed={config.seed}" in name
    assert "swept" in out and "policy.window=32,seed=1" in out  # the sweep table names the values


def test_which_swept_keys_the_folder_name_must_show(monkeypatch):
    from kvexp.launch import axes

    assert (
        axes.swept_axes(
            [
                "-m",
                "policy=h2o,snapkv",
                "budget='128','512'",
                "budget.slack=1,8",
                "dataset.shard.index=range(0,2)",
                "model=a,b",
                "hydra/launcher=local",
            ]
        )
        == []
    )
    assert axes.swept_axes(
        [
            "-m",
            "policy.n_sink=0,4",
            "seed=range(0,3)",
            "generation=default,long",
            "generation.batch_size=4",
            "+extra=[1,2]",
            "x='a,b'",
        ]
    ) == ["policy.n_sink", "seed", "generation"]
    assert axes.swept_axes(["-m", "experiment=organism"]) == []  # it sweeps policy and budget.tokens only
    # Hydra's own flags and their values, and what Hydra will refuse itself, are not overrides
    assert axes.swept_axes(["-m", "--config-name", "config", "--cfg", "job", "seed=0,1", "bad=[1,"]) == ["seed"]
    # an experiment file that sweeps a policy parameter
    fake = OmegaConf.create(
        {"hydra": {"sweeper": {"params": {"policy.window": "16,32", "budget.tokens": "128", "seed": "7"}}}}
    )
    monkeypatch.setattr("kvexp.pipeline.config.compose_config", lambda *a, **k: fake)
    assert axes.swept_axes(["-m", "experiment=mine"]) == ["policy.window"]


def test_folder_naming_of_swept_keys_leaves_other_command_lines_alone():
    from kvexp.launch import name_swept_axes

    for args in (
        ["policy.window=16"],
        ["-m", "policy=h2o,snapkv"],
        ["-m", "policy.window=16,32", "hydra.sweep.subdir=mine/${policy.window}"],
        ["-m", "experiment=nope", "seed=0,1"],
    ):  # Hydra reports the unknown experiment itself
        assert name_swept_axes(args) == args
    [added] = name_swept_axes(["-m", "policy.window=16,32"])[2:]
    assert added.startswith("hydra.sweep.subdir='${model.name}/${dataset.name}/${kvexp.cell:")
    assert added.endswith("${kvexp.axis:policy.window,${policy.window}}'")


def _cells(experiment: str, only_bundled: bool) -> list[list[str]]:
    cells = sweeps.cells(compose_config([f"experiment={experiment}"], return_hydra_config=True))
    if only_bundled:
        cells = [c for c in cells if not any(o.startswith("dataset=") and o not in BUNDLED for o in c)]
    return cells


BUNDLED = ("dataset=gsm8k", "dataset=math500")


def test_smoke_experiment_runs_every_cell(tmp_path):
    from kvexp.policies import POLICY_NAMES

    cells = _cells("smoke", only_bundled=False)
    assert len(cells) == 2 * len(POLICY_NAMES)  # every policy on the two bundled datasets
    for i, cell in enumerate(cells):
        run_job(compose_config(["experiment=smoke", *cell, *FAST]), tmp_path / str(i))
        assert_complete(tmp_path / str(i), 2)


@pytest.mark.parametrize(
    "experiment",
    [
        "paper_llama31_8b_instruct",
        "paper_nemotron_nano_8b",
        "paper_r1_distill_llama_8b",
        "paper_r1_distill_qwen_7b",
        "paper_full",
    ],
)
def test_paper_experiment_runs_a_bundled_cell(tmp_path, experiment):
    cell = _cells(experiment, only_bundled=True)[0]
    metrics = run_job(compose_config([f"experiment={experiment}", *cell, *FAST]), tmp_path / "job")
    assert_complete(tmp_path / "job", 2)
    assert metrics["dataset"] in ("gsm8k", "math500") and metrics["max_new_tokens"] == 8


@pytest.mark.parametrize("experiment", ["organism_suite", "organism", "demo"])
def test_organism_experiment_runs_a_cell_of_each_task(tmp_path, experiment):
    """A short cell per task of each organism experiment, through the real pipeline and the organism's
    checkpoint: each task loads, prompts, decodes under its policies and grades."""
    axes = sweeps.sweep_params(compose_config([f"experiment={experiment}"], return_hydra_config=True))
    fast = ["dataset.limit=2", "generation.max_new_tokens=12", "logger=none"]
    for dataset in axes.get("dataset", [compose_config([f"experiment={experiment}"]).dataset.name]):
        cell = [f"dataset={dataset}", f"policy={axes['policy'][-1]}", f"budget.tokens={axes['budget.tokens'][-1]}"]
        cell += [f"++policy.protect_prompt={v}" for v in axes.get("++policy.protect_prompt", [])[-1:]]
        metrics = run_job(compose_config([f"experiment={experiment}", *cell, *fast]), tmp_path / dataset)
        rows = assert_complete(tmp_path / dataset, 2)
        assert metrics["dataset"] == dataset and all(r["n_output_tokens"] > 0 for r in rows)


@pytest.mark.smollm2
def test_default_job_on_smollm2(tmp_path):
    metrics = run_job(compose_config(["dataset.limit=2", "generation.max_new_tokens=16"]), tmp_path / "job")
    rows = assert_complete(tmp_path / "job", 2)
    assert metrics["model"] == "smollm2_135m" and metrics["policy"] == "h2o" and metrics["budget"] == 128
    assert all(r["prompt"].startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM") for r in rows)
    assert all(r["output"].strip() for r in rows)  # real text, not noise
    assert list((tmp_path / "job" / "wandb").glob("offline-run-*"))


def test_the_throughput_shown_is_the_jobs_and_rises_with_the_rows_decoding_together(tmp_path, monkeypatch):
    """Tables, cells.csv and the sweep summary show throughput_tokens_per_s (every row's tokens over the wall
    time of decoding them together); the per-row speed appears only under a name that says so."""
    from kvexp.engine import Engine
    from kvexp.pipeline.summary import format_table
    from kvexp.report import build_report

    forward, clock = Engine._forward, {"s": 0.0}

    def like_a_gpu(self, *args, **kwargs):  # a forward pass costs 10 ms for 1 row or 8, as on a GPU, on the
        clock["s"] += 0.01  # job's clock alone: no timing of this shared machine enters the comparison
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "_forward", like_a_gpu)
    monkeypatch.setattr("kvexp.pipeline.job.time", SimpleNamespace(**vars(time)))
    monkeypatch.setattr("kvexp.pipeline.job.time.perf_counter", lambda: clock["s"])

    shown = {}
    for rows in (1, 8):
        job = tmp_path / f"rows{rows}" / "job"
        metrics = run(job, "dataset.limit=8", "generation.max_new_tokens=24", f"generation.batch_size={rows}")
        status = load(job, "status.json")
        assert metrics["throughput_tokens_per_s"] == pytest.approx(status["decode_tokens"] / status["decode_wall_s"])
        assert status["decode_tokens"] == sum(r["n_output_tokens"] for r in samples(job))
        header, line = format_table([metrics]).splitlines()[::2]
        summary = dict(zip(header.split(), line.split()))
        assert "tok/s" not in summary  # no unlabelled speed
        result = build_report([job.parent], tmp_path / f"report{rows}")
        cells = (tmp_path / f"report{rows}" / "cells.csv").read_text().splitlines()
        csv_row = dict(zip(cells[0].split(","), cells[1].split(",")))
        assert "decode_tokens_per_s" not in csv_row and float(csv_row["row_decode_tokens_per_s"]) > 0
        table = result.table("efficiency", "gsm8k")
        value = table.value("h2o", "B=128", "throughput_tokens_per_s")
        assert value == pytest.approx(float(csv_row["throughput_tokens_per_s"]))
        assert value == pytest.approx(float(summary["throughput_tok/s"]), rel=0.01)
        shown[rows] = value

        run(job, "dataset.limit=8", "generation.max_new_tokens=24", f"generation.batch_size={rows}")
        assert load(job, "metrics.json")["throughput_tokens_per_s"] == metrics["throughput_tokens_per_s"]  # kept
    assert shown[8] > 3 * shown[1], shown
