"""hydra/launcher=slurm against a real SLURM cluster: every cell a job, sharding, requeue and resume
after a signal, a cancelled or failing job named at the launcher's exit.

The cluster tests need sbatch on PATH and a controller that answers (`sudo bash
jobs/local_slurm/start.sh` starts a single-node cluster with accounting on this machine); without
them they skip and say why. KVEXP_REQUIRE_SLURM=1 (CI, which starts the cluster) turns that skip into
a failure. The tests submit to the cluster's default partition (or KVEXP_SLURM_PARTITION /
KVEXP_SLURM_ACCOUNT / KVEXP_SLURM_QOS, as any launch) and write below pytest's tmp_path, or below
KVEXP_SLURM_TEST_DIR where the compute nodes need a shared filesystem.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_pipeline import assert_complete, load, samples

from kvexp.launch import expand_shards
from kvexp.pipeline.config import CONFIG_DIR, compose_config

REPO = CONFIG_DIR.parent
LAUNCH_TIMEOUT_S = 300
# one small job per cell: the tiny random model, a few problems, few tokens, 1 CPU, 2 GB, no W&B
TINY = [
    "model=tiny_random",
    "logger=none",
    "generation.max_new_tokens=8",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=60",
    "hydra.launcher.poll_s=2",
]
# cells that run long enough (8 problems one by one, 64 tokens each) to be interrupted mid-run
SLOW = ["dataset.limit=8", "generation.batch_size=1", "generation.max_new_tokens=64"]


# ---------------------------------------------------------------- is there a cluster?


def slurm_missing(path: str | None = None) -> str | None:
    """Why the SLURM tests cannot run here, or None when a controller answers."""
    sbatch = shutil.which("sbatch", path=path)
    if sbatch is None:
        return "no SLURM here: sbatch is not on PATH (sudo bash jobs/local_slurm/start.sh starts a local cluster)"
    scontrol = shutil.which("scontrol", path=path) or "scontrol"
    try:
        ping = subprocess.run([scontrol, "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"no SLURM controller answers (scontrol ping: {e})"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return f"no SLURM controller answers (scontrol ping: {(ping.stdout + ping.stderr).strip() or ping.returncode})"
    return None


@pytest.fixture(scope="module")
def cluster() -> dict:
    reason = slurm_missing()
    if reason:
        if os.environ.get("KVEXP_REQUIRE_SLURM") == "1":
            pytest.fail(f"KVEXP_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    # a cluster without accounting is a broken setup, not a missing one: submitit needs sacct to
    # notice jobs that end without a result
    acct = subprocess.run(["sacct", "-n", "-X", "-o", "JobID"], capture_output=True, text=True, timeout=30)
    assert acct.returncode == 0, f"SLURM answers but sacct does not (no accounting?): {acct.stderr.strip()}"
    gres = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, timeout=30).stdout
    # the default config asks for one GPU per job; on a cluster without gres/gpu, ask for none
    return {"gpu_overrides": [] if "gpu" in gres else ["hydra.launcher.gpus_per_node=0"]}


@pytest.fixture
def workdir(tmp_path) -> Path:
    base = os.environ.get("KVEXP_SLURM_TEST_DIR")
    return Path(tempfile.mkdtemp(prefix="kvexp-slurm-", dir=base)) if base else tmp_path


def launch(cluster: dict, sweep: Path, *overrides: str, wait: bool = True):
    """`python -m kvexp.main -m hydra/launcher=slurm ...` into `sweep`; (returncode, output) or the Popen."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    env.pop("HYDRA_FULL_ERROR", None)  # the message users see
    cmd = [
        sys.executable,
        "-m",
        "kvexp.main",
        "-m",
        "hydra/launcher=slurm",
        *TINY,
        *cluster["gpu_overrides"],
        f"hydra.sweep.dir={sweep}",
        *overrides,
    ]
    proc = subprocess.Popen(cmd, cwd=sweep.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return finish(proc) if wait else proc


def finish(proc: subprocess.Popen, waiting_on: str = "its jobs") -> tuple[int, str]:
    """Wait for a launcher; (returncode, output), or fail naming what it was waiting on."""
    try:
        out = proc.communicate(timeout=LAUNCH_TIMEOUT_S)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the launcher waited on {waiting_on} for over {LAUNCH_TIMEOUT_S}s:\n{proc.communicate()[0]}")
    return proc.returncode, out


def job_folders(sweep: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in sorted(sweep.glob("*/*/*/config.yaml"))}


def wait_for(predicate, what: str, proc: subprocess.Popen | None = None, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the launcher ended while waiting for {what}:\n{proc.communicate()[0]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def n_rows(folder: Path) -> int:
    try:
        return (folder / "samples.jsonl").read_text().count("\n")
    except OSError:
        return 0


def slurm_job_id(folder: Path) -> str:
    wait_for(lambda: (folder / "run_meta.json").exists(), f"{folder.name}/run_meta.json")
    return load(folder, "run_meta.json")["scheduler"]["job_id"]


def sacct_states(job_id: str) -> list[str]:
    """Every run of a job in the accounting, oldest first (a requeued job has one row per run)."""
    out = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-D", "-o", "State", "-j", job_id], capture_output=True, text=True, timeout=30
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def queue_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def assert_accounted(job_id: str, expected: list[str], timeout: float = 60) -> None:
    """The accounting ends up with `expected` runs (it learns of a job's end a moment after the job)."""
    deadline = time.monotonic() + timeout
    while (states := sacct_states(job_id)) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    assert states == expected, f"sacct for {job_id}: {states}, expected {expected}"


# ---------------------------------------------------------------- the cluster tests


@pytest.mark.slurm
def test_every_cell_is_a_slurm_job(cluster, workdir):
    sweep = workdir / "sweep"
    rc, out = launch(cluster, sweep, "policy=full,h2o", "budget=16,32", "dataset.limit=4")
    assert rc == 0, out
    folders = job_folders(sweep)
    # 4 tasks; the full cache ignores the budget, so its two tasks share one folder (one runs it, the
    # other resumes it finished or leaves it to the task running it)
    assert set(folders) == {"full", "h2o-b16-s1", "h2o-b32-s1"}, out
    job_ids = set()
    for folder in folders.values():
        assert_complete(folder, 4)
        scheduler = load(folder, "run_meta.json")["scheduler"]
        assert scheduler["SUBMITIT_EXECUTOR"] == "slurm" and scheduler["SLURM_JOB_ID"] and scheduler["restarts"] == 0
        job_ids.add(scheduler["job_id"])
        assert (sweep / ".submitit" / scheduler["job_id"]).is_dir()  # its submitit log folder
        assert_accounted(scheduler["job_id"], ["COMPLETED"])
    assert len(job_ids) == 3 and len({j.split("_")[0] for j in job_ids}) == 1, job_ids  # one array
    array = next(iter(job_ids)).split("_")[0]
    for task in range(4):
        assert_accounted(f"{array}_{task}", ["COMPLETED"])  # the full cache's second task too
    assert "kvexp sweep" in out and "(3 cells)" in out  # the sweep-end table


@pytest.mark.slurm
def test_a_request_no_node_can_meet_fails_the_launch_at_once_naming_the_fix(cluster, workdir):
    cpus = int(
        subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, timeout=30)
        .stdout.split()[0]
        .rstrip("+")
    )
    rc, out = launch(
        cluster, workdir / "sweep", "policy=h2o,knorm", "dataset.limit=1", f"hydra.launcher.cpus_per_task={cpus * 8}"
    )
    assert rc == 1, out
    assert "SLURM will never start 2 cell(s)" in out and "pending reason PartitionConfig" in out, out
    assert f"asks for {cpus * 8} CPUs" in out and f"{cpus} CPUs" in out, out
    assert "hydra.launcher.cpus_per_task=" in out and "KVEXP_SLURM_CPUS" in out, out
    array = out.split("job array ")[1].split(")")[0]
    assert queue_state(array) == "", "the array was not cancelled"


@pytest.mark.slurm
def test_queued_cells_say_why_they_wait(cluster, workdir):
    import threading

    proc = launch(
        cluster, workdir / "sweep", "dataset.limit=1", "+hydra.launcher.additional_parameters.hold=true", wait=False
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    said = "wait in the SLURM queue (1 JobHeldUser)"  # the launcher logs why its held cell waits
    try:
        wait_for(lambda: any(said in line for line in lines), "the launcher to say why its cell waits", timeout=120)
    finally:
        submitted = [line for line in lines if "submitted 1 job" in line]
        array = submitted[0].split("SLURM array ")[1].split(")")[0] if submitted else None
        if array:
            subprocess.run(["scontrol", "release", array], timeout=30)  # lets it run (or end, on failure)
    assert proc.wait(timeout=LAUNCH_TIMEOUT_S) == 0, "".join(lines)
    reader.join(timeout=10)


@pytest.mark.slurm
def test_shards_split_a_cell_into_disjoint_jobs(cluster, workdir):
    from kvexp.data import load_problems
    from kvexp.report.cells import build_cells
    from kvexp.report.loading import load_job

    sweep = workdir / "sweep"
    rc, out = launch(cluster, sweep, "policy=h2o", "budget=16", "dataset.limit=4", "dataset.shard.count=2")
    assert rc == 0, out
    folders = job_folders(sweep)
    assert set(folders) == {"h2o-b16-s1-shard0of2", "h2o-b16-s1-shard1of2"}, out
    ids = [{r["id"] for r in assert_complete(folder, 2)} for folder in folders.values()]
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == {p.id for p in load_problems("gsm8k", limit=4)}  # the whole cell
    metrics = [load(folder, "metrics.json") for folder in folders.values()]
    assert {m["cell"] for m in metrics} == {"h2o-b16-s1"} and [m["shard"]["index"] for m in metrics] == [0, 1]
    # the report merges the shards back into one cell
    cells = build_cells([load_job(folder) for folder in folders.values()])
    assert len(cells) == 1 and cells[0].complete and cells[0].shard_count == 2 and len(cells[0].rows) == 4


@pytest.mark.slurm
def test_an_interrupted_job_is_requeued_and_resumes(cluster, workdir):
    """SIGUSR2 (SLURM's time-limit warning) for one cell, SIGTERM for the other, mid-run: each flushes,
    marks itself preempted, is requeued and finishes with every row exactly once."""
    sweep = workdir / "sweep"
    proc = launch(cluster, sweep, "policy=h2o,tova", "budget=32", *SLOW, wait=False)
    signals = {"h2o-b32-s1": "USR2", "tova-b32-s1": "TERM"}
    folders = {name: sweep / "tiny_random" / "gsm8k" / name for name in signals}
    job_ids: dict[str, str] = {}

    def signal_each_after_its_first_row() -> bool:
        for name, folder in folders.items():
            if name not in job_ids and n_rows(folder) >= 1:
                job_ids[name] = slurm_job_id(folder)
                subprocess.run(["scancel", f"--signal={signals[name]}", job_ids[name]], check=True, timeout=30)
        return len(job_ids) == len(folders)

    wait_for(signal_each_after_its_first_row, "a first row of each cell", proc)
    before: dict[str, list[dict]] = {}
    for name, folder in folders.items():
        wait_for(lambda: load(folder, "status.json")["state"] == "preempted", f"{name} marked preempted", proc, 60)
        assert f"SIG{signals[name]}" in load(folder, "status.json")["error"]
        before[name] = samples(folder)
        assert 1 <= len(before[name]) < 8, f"{name} was not interrupted mid-run"
        wait_for(
            lambda: len(sacct_states(job_ids[name])) >= 2 and queue_state(job_ids[name]) in ("PENDING", "RUNNING"),
            f"{name} requeued",
            proc,
            60,
        )
        # SLURM holds a requeued job for AuthInfo cred_expire seconds (jobs/local_slurm/start.sh: 10 s,
        # SLURM's default: 120 s); let it start at once
        if queue_state(job_ids[name]) == "PENDING":
            subprocess.run(
                ["scontrol", "update", f"JobId={job_ids[name]}", "StartTime=now"], capture_output=True, timeout=30
            )
    rc, out = finish(proc)
    assert rc == 0, out
    for name, folder in folders.items():
        rows = assert_complete(folder, 8)  # no row lost, none duplicated
        assert rows[: len(before[name])] == before[name]  # the rows written before the signal are kept as they were
        scheduler = load(folder, "run_meta.json")["scheduler"]
        assert scheduler["restarts"] == 1, scheduler  # the same SLURM job, started a second time
        log = (sweep / ".submitit" / scheduler["job_id"] / f"{scheduler['job_id']}_0_log.out").read_text()
        assert "Requeued job" in log, log[-3000:]
        assert_accounted(scheduler["job_id"], ["REQUEUED", "COMPLETED"])


@pytest.mark.slurm
def test_cancelled_jobs_fail_the_launcher_naming_their_cells(cluster, workdir):
    """One job cancelled while it runs, one while it still waits in the queue (at most 2 cells run at
    once): the launcher notices both, lets the third cell finish, and exits 1 naming the two."""
    sweep = workdir / "sweep"
    proc = launch(
        cluster, sweep, "policy=full,h2o,tova", "budget=32", *SLOW, "hydra.launcher.array_parallelism=2", wait=False
    )
    running = sweep / "tiny_random" / "gsm8k" / "h2o-b32-s1"
    wait_for(lambda: n_rows(running) >= 1, "a first row of the h2o cell", proc)
    running_id = slurm_job_id(running)
    queued_id = running_id.split("_")[0] + "_2"  # the tova cell, held back by the array's cap
    subprocess.run(["scancel", running_id, queued_id], check=True, timeout=30)
    t_cancel = time.monotonic()
    rc, out = finish(proc, "a cancelled job")
    assert rc == 1, out
    message = out[out.index("cells failed") :]
    assert "2 of 3 cells failed" in out and "gsm8k/full" not in message, out
    assert "h2o-b32-s1" in message and f"SLURM job {running_id}" in message, out
    assert "tova-b32-s1" in message and f"SLURM job {queued_id}, CANCELLED" in message, out
    assert message.lower().count("cancelled") >= 2, out
    assert_complete(sweep / "tiny_random" / "gsm8k" / "full", 8)  # the other cell finished
    status = load(running, "status.json")
    assert status["state"] == "preempted" and 1 <= len(samples(running)) < 8  # flushed, resumable
    assert not (sweep / "tiny_random" / "gsm8k" / "tova-b32-s1").exists()  # never started
    assert time.monotonic() - t_cancel < 120, "the cancellations were noticed late"


@pytest.mark.slurm
def test_a_job_that_raises_is_recorded_and_named_and_the_others_finish(cluster, workdir):
    sweep = workdir / "sweep"
    # window 200 fits budget 512 but not budget 16: that job raises before its model loads
    rc, out = launch(cluster, sweep, "policy=h2o", "budget=16,512", "policy.window=200", "dataset.limit=2")
    assert rc == 1, out
    message = out[out.index("cells failed") :]
    assert "1 of 2 cells failed" in out and "h2o-b16-s1" in message and "raise budget.tokens" in message, out
    assert "h2o-b512-s1" not in message
    assert_complete(sweep / "tiny_random" / "gsm8k" / "h2o-b512-s1", 2)
    status = load(sweep / "tiny_random" / "gsm8k" / "h2o-b16-s1", "status.json")
    assert status["state"] == "failed" and "raise budget.tokens" in status["error"]
    assert "Traceback" in status["traceback"] and "plan_job" in status["traceback"]


# ---------------------------------------------------------------- without a cluster


def test_without_slurm_the_cluster_tests_skip_and_say_why(tmp_path):
    reason = slurm_missing(path=str(tmp_path))  # a PATH without any SLURM command
    assert reason is not None and "sbatch is not on PATH" in reason


def test_slurm_launcher_settings_come_from_the_environment_or_the_command_line(monkeypatch):
    for var in [v for v in os.environ if v.startswith("KVEXP_SLURM_")]:
        monkeypatch.delenv(var)
    launcher = compose_config(["hydra/launcher=slurm"], return_hydra_config=True).hydra.launcher
    assert launcher._target_ == "hydra_plugins.kvexp_launcher.SlurmLauncher"
    assert launcher.gpus_per_node == 1 and launcher.partition is None and launcher.account is None
    assert launcher.max_num_timeout >= 1 and launcher.additional_parameters.requeue is True
    assert launcher.array_parallelism >= 1 and launcher.signal_delay_s > 0

    monkeypatch.setenv("KVEXP_SLURM_PARTITION", "gpu-long")
    monkeypatch.setenv("KVEXP_SLURM_ACCOUNT", "proj42")
    monkeypatch.setenv("KVEXP_SLURM_GPUS", "2")
    monkeypatch.setenv("KVEXP_SLURM_TIMEOUT_MIN", "90")
    monkeypatch.setenv("KVEXP_SLURM_SETUP", "module load cuda")
    launcher = compose_config(
        ["hydra/launcher=slurm", "hydra.launcher.account=cli-wins"], return_hydra_config=True
    ).hydra.launcher
    assert (launcher.partition, launcher.account, launcher.gpus_per_node, launcher.timeout_min) == (
        "gpu-long",
        "cli-wins",
        2,
        90,
    )
    assert list(launcher.setup) == ["module load cuda"]


def test_hydra_instantiates_kvexps_launchers(monkeypatch):
    from hydra.core.plugins import Plugins

    from kvexp.launch import LocalLauncher, SlurmLauncher, register_launchers

    register_launchers()
    for name, cls in (("slurm", SlurmLauncher), ("local", LocalLauncher)):
        cfg = compose_config([f"hydra/launcher={name}"], return_hydra_config=True)
        launcher = Plugins.instance()._instantiate(cfg.hydra.launcher)
        assert type(launcher) is cls
    monkeypatch.setenv("KVEXP_SLURM_QOS", "")  # set but empty: not set
    launcher = Plugins.instance()._instantiate(
        compose_config(["hydra/launcher=slurm", "hydra.launcher.poll_s=5"], return_hydra_config=True).hydra.launcher
    )
    assert launcher.params["qos"] is None and launcher.poll_s == 5 and "poll_s" not in launcher.params


def test_each_launcher_holds_its_executors_behaviour(tmp_path):
    """Without a cluster: what differs between SLURM and local lives in their own classes."""
    import signal
    from types import SimpleNamespace

    from hydra.core.plugins import Plugins

    from kvexp.launch import LocalLauncher, SlurmLauncher, register_launchers
    from kvexp.launch.launcher import JobNotRequeued
    from kvexp.pipeline.signals import JobInterrupted

    register_launchers()
    slurm, local = (
        Plugins.instance()._instantiate(
            compose_config([f"hydra/launcher={name}"], return_hydra_config=True).hydra.launcher
        )
        for name in ("slurm", "local")
    )
    assert (type(slurm), type(local)) == (SlurmLauncher, LocalLauncher)
    # submitit_local's time limit (SIGUSR2) requeues a local job; SIGTERM means the sweep is being stopped
    local._check_requeue(JobInterrupted(signal.SIGUSR2))
    with pytest.raises(JobNotRequeued, match="SIGTERM"):
        local._check_requeue(JobInterrupted(signal.SIGTERM))
    # a job that left no result: SLURM's accounting says why, a local job has no such word
    job = SimpleNamespace(
        job_id="12_3",
        paths=SimpleNamespace(result_pickle=tmp_path / "absent.pkl"),
        watcher=SimpleNamespace(get_state=lambda job_id, mode: "OUT_OF_MEMORY"),
    )
    assert slurm._state_without_result(job) == "OUT_OF_MEMORY" and local._state_without_result(job) is None
    assert (slurm._job_name(job), local._job_name(job)) == ("SLURM job 12_3", "local job 12_3")


def test_shard_count_on_a_multirun_runs_every_shard(capsys):
    assert expand_shards(["-m", "policy=h2o", "dataset.shard.count=3"]) == [
        "-m",
        "policy=h2o",
        "dataset.shard.count=3",
        "dataset.shard.index=range(0,3)",
    ]
    # an explicit index, one shard, or no multirun: unchanged
    for args in (
        ["-m", "dataset.shard.count=3", "dataset.shard.index=1"],
        ["-m", "dataset.shard.count=1"],
        ["-m", "policy=h2o"],
    ):
        assert expand_shards(args) == args
    assert expand_shards(["dataset.shard.count=2"]) == ["dataset.shard.count=2"]
    assert "runs shard 0 only" in capsys.readouterr().err


def test_a_cancelled_queued_task_does_not_mark_the_running_tasks_of_its_array():
    from kvexp.launch.slurm import array_aware_watcher

    # sacct after `scancel 37_2` while 37_0 and 37_1 run: the queued remainder keeps the submitted range
    sacct = (
        "JobID|State|NodeList\n37_0|COMPLETED|n1\n37_1|RUNNING|n1\n37_[0-2%2]|CANCELLED by 0|None assigned\n"
        "41_[3]|PENDING|None assigned\n42|RUNNING|n2\n"
    )
    info = array_aware_watcher().read_info(sacct)
    assert {k: v["State"] for k, v in info.items()} == {
        "37_0": "COMPLETED",
        "37_1": "RUNNING",
        "37_2": "CANCELLED by 0",
        "41_3": "PENDING",
        "42": "RUNNING",
    }


def test_the_first_termination_signal_interrupts_and_later_ones_are_ignored(capsys):
    import signal

    from kvexp.pipeline.signals import JobInterrupted, signals_as_exceptions

    before = signal.getsignal(signal.SIGUSR2)
    with signals_as_exceptions():  # the launcher's block around the job
        with pytest.raises(JobInterrupted) as info:
            with signals_as_exceptions():  # run_job's own block
                os.kill(os.getpid(), signal.SIGUSR2)
                time.sleep(1)
        assert info.value.signal_name == "SIGUSR2" and info.value.exit_code == 128 + signal.SIGUSR2
        os.kill(os.getpid(), signal.SIGTERM)  # while the job winds down: noted, not raised
        time.sleep(0.1)
    assert "SIGTERM received while the job is already stopping" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGUSR2) is before
    with pytest.raises(JobInterrupted):  # a new job is interruptible again
        with signals_as_exceptions():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)


def test_partition_offer_reads_sinfo_including_mixed_memory(monkeypatch):
    """sinfo writes "64000+" for a partition whose nodes differ in memory: read as at least 62 GB."""
    from kvexp.launch import slurm

    monkeypatch.setattr(slurm, "_run", lambda cmd, timeout=10: "2|64000+|gpu:2|infinite\n4|16384|(null)|1:00:00\n")
    assert slurm.partition_offer("debug") == (
        "2 CPUs, 62+ GB memory, GRES gpu:2 per node, time limit infinite; "
        "4 CPUs, 16 GB memory, GRES (null) per node, time limit 1:00:00"
    )
    monkeypatch.setattr(slurm, "_run", lambda cmd, timeout=10: None)
    assert slurm.partition_offer("debug") == "unknown (sinfo did not answer)"
    assert slurm.cancel("123") is False
