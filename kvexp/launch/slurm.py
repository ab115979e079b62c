"""Asking SLURM about jobs: the job this process runs in (from inside a job step), and the launcher's
view of a job array (ArrayAwareWatcher)."""

from __future__ import annotations

import os
import re
import subprocess
import time

#: Job states after which SLURM itself brings the job back (a requeue is under way).
REQUEUED_STATES = ("PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "SPECIAL_EXIT")


def _run(cmd: list[str], timeout: float = 10) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def cancel(job_id: str) -> bool:
    """`scancel` the job (or job array); False when SLURM did not answer."""
    return _run(["scancel", job_id], timeout=30) is not None


def accounting_state(job_id: str) -> str | None:
    """The job's state in the accounting database (`sacct`), e.g. RUNNING or "CANCELLED by 1000"."""
    out = _run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id])
    lines = [line.strip() for line in (out or "").splitlines() if line.strip()]
    return lines[-1] if lines else None


def controller_state(job_id: str) -> str | None:
    """The job's state in slurmctld (`scontrol show job`), e.g. RUNNING or COMPLETING."""
    out = _run(["scontrol", "-o", "show", "job", job_id])
    for field in (out or "").split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return None


def own_job_id() -> str | None:
    return os.environ.get("SLURM_JOB_ID")


def why_stopping(job_id: str | None = None, settle_s: float = 3.0) -> tuple[str, str | None]:
    """Why SLURM signalled this job, as (verdict, state):

    - ("cancelled", state): `scancel` (the accounting says CANCELLED): do not requeue;
    - ("running", state): the job still runs (a `--signal=USR2@...` time-limit warning, `scancel
      --signal`, a preemption notice): requeue it;
    - ("ending", state): SLURM is ending the job for a reason the accounting does not give (no
      accounting, or it lags): do not requeue (a cancelled job must not come back);
    - ("other", state): anything else (PREEMPTED, TIMEOUT, ...): requeue it.

    When slurmctld already says COMPLETING but the accounting still says RUNNING, the accounting is
    asked again for up to `settle_s` seconds (it learns of a cancellation a moment later)."""
    job_id = job_id or own_job_id()
    if not job_id:
        return "other", None
    deadline = time.monotonic() + settle_s
    while True:
        ctl, acct = controller_state(job_id), accounting_state(job_id)
        if any(s and s.upper().startswith("CANCELLED") for s in (acct, ctl)):
            return "cancelled", acct or ctl
        if ctl == "RUNNING" and acct in (None, "RUNNING", "PENDING"):  # the accounting may lag behind a start
            return "running", ctl
        if acct not in (None, "RUNNING", "PENDING"):
            return "other", acct
        if time.monotonic() >= deadline:
            return ("ending", ctl) if ctl == "COMPLETING" or acct is None else ("other", acct or ctl)
        time.sleep(0.3)


def array_aware_watcher(delay_s: int = 600):
    """submitit's SlurmInfoWatcher (one `sacct` call for all jobs), except for one thing.

    sacct lists the part of an array that is still queued under one line whose id keeps the range
    the array was submitted with (`123_[0-7%2]`), and submitit gives every task of that range the
    line's state: cancel one queued task and the running ones read CANCELLED too (and are reported
    failed while they run). Here a task's own line (`123_4`) always wins over a range line."""
    from submitit.slurm.slurm import SlurmInfoWatcher, read_job_id

    class ArrayAwareWatcher(SlurmInfoWatcher):
        def read_info(self, string):
            if not isinstance(string, str):
                string = string.decode()
            lines = string.splitlines()
            if len(lines) < 2:
                return {}
            names = lines[0].split("|")
            own: dict[str, dict[str, str]] = {}
            ranged: dict[str, dict[str, str]] = {}
            for line in lines[1:]:
                stats = {x: y.strip() for x, y in zip(names, line.split("|"))}
                job_id = stats.get("JobID", "")
                if not job_id or "." in job_id:
                    continue
                try:
                    parts = read_job_id(job_id)
                except Exception:  # noqa: BLE001 - as submitit: skip what cannot be read
                    continue
                for part in parts:
                    if len(part) >= 3:  # a range: 123_[0-7]
                        for index in range(int(part[1]), int(part[2]) + 1):
                            ranged[f"{part[0]}_{index}"] = stats
                    elif "[" in job_id:  # a one-element range: 123_[5]
                        ranged["_".join(part[:2])] = stats
                    else:
                        own["_".join(part[:2])] = stats
            return {**ranged, **own}

    return ArrayAwareWatcher(delay_s=delay_s)


# ---------------------------------------------------------------- why queued jobs do not start

#: Pending reasons that waiting never resolves: the request exceeds what the partition, its nodes or
#: the account's per-job limits allow, or names something that does not exist.
NEVER_STARTS = {
    "PartitionConfig": "the request exceeds what the partition's nodes offer",
    "PartitionNodeLimit": "the node count is outside the partition's limits",
    "PartitionTimeLimit": "the time limit exceeds the partition's maximum",
    "BadConstraints": "the constraints cannot be met by any node",
    "InvalidAccount": "the account does not exist or is not usable",
    "InvalidQOS": "the QOS does not exist or is not usable",
}
_PER_JOB_LIMIT = re.compile(r"^(QOS|Assoc)Max\w*PerJob\w*Limit$")  # e.g. QOSMaxCpuPerJobLimit


def never_starts(reason: str) -> str | None:
    """What a pending reason means when waiting cannot resolve it, else None (Priority, Resources, ...)."""
    if reason in NEVER_STARTS:
        return NEVER_STARTS[reason]
    if _PER_JOB_LIMIT.match(reason):
        return "the request exceeds a per-job limit of the QOS or account"
    return None


def pending_tasks(array_id: str) -> dict[str, tuple[str, str]]:
    """{task id: (pending reason, partition)} of the array's tasks still pending (squeue, one line per task)."""
    out = _run(["squeue", "-h", "-r", "-t", "PENDING", "-j", array_id, "-o", "%i|%r|%P"])
    tasks = {}
    for line in (out or "").splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[0]:
            tasks[parts[0]] = (parts[1], parts[2])
    return tasks


def partition_offer(partition: str) -> str:
    """What the partition's nodes offer, in words (sinfo), e.g. "2 CPUs, 21 GB memory, GRES gpu:2 per node,
    time limit infinite"."""
    out = _run(["sinfo", "-h", "-p", partition, "-o", "%c|%m|%G|%l"])
    offers = []
    for line in sorted(set((out or "").split("\n"))):
        parts = line.strip().split("|")
        if len(parts) == 4:
            cpus, mem_mb, gres, limit = parts
            # sinfo writes "64000+" when the partition's nodes differ: at least that much
            mb, more = mem_mb.rstrip("+"), "+" if mem_mb.endswith("+") else ""
            mem = f"{int(mb) // 1024}{more} GB" if mb.isdigit() else f"{mem_mb} MB"
            offers.append(f"{cpus} CPUs, {mem} memory, GRES {gres} per node, time limit {limit}")
    return "; ".join(offers) or "unknown (sinfo did not answer)"
