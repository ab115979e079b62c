"""run_meta.json (what ran where: code version, packages, host, device, scheduler) and the secret
scrubbing applied to everything kvexp writes or sends.

Access tokens reach kvexp only through the environment (HF_TOKEN, WANDB_API_KEY). Nothing here copies
the environment; as a second line of defence, config values under secret-looking keys and any string
containing the value of a known secret variable are masked before they are written.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY")
_SECRET_KEY = re.compile(r"(^|_)(token|api_key|apikey|secret|password)$", re.IGNORECASE)
MASK = "***"

PACKAGES = (
    "kvexp",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "hydra-core",
    "omegaconf",
    "hydra-submitit-launcher",
    "submitit",
    "wandb",
    "datasets",
    "math-verify",
    "numpy",
    "gguf",
)
SCHEDULER_ENV = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_NAME",
    "SLURM_JOB_PARTITION",
    "SLURM_JOB_ACCOUNT",
    "SLURM_JOB_QOS",
    "SLURM_NODELIST",
    "SLURM_RESTART_COUNT",
    "SUBMITIT_EXECUTOR",
    "SUBMITIT_LOCAL_JOB_ID",
    "CUDA_VISIBLE_DEVICES",
)


def _secret_override(text: str) -> tuple[str, str] | None:
    """(name, value) of a command-line override that sets a secret-looking key (+model.hf_token=...)."""
    name, eq, value = text.partition("=")
    if eq and _SECRET_KEY.search(name.lstrip("+~").rsplit(".", 1)[-1]):
        return name, value
    return None


def _secrets_in(obj: Any, key: str = "") -> list[str]:
    """Values under secret-looking keys or in secret overrides, to mask wherever else they appear
    (e.g. inside Hydra's override_dirname, `a=1,+model.hf_token=...`)."""
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in _secrets_in(v, str(k))]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in _secrets_in(v, key)]
    if isinstance(obj, str):
        if _SECRET_KEY.search(key):
            return [obj]
        found = _secret_override(obj)
        return [found[1]] if found else []
    return []


def scrub(obj: Any) -> Any:
    """A copy of a plain config/metadata structure with secrets masked."""
    secrets = [v for k in SECRET_ENV if len(v := os.environ.get(k, "")) >= 8]
    secrets += [v for v in _secrets_in(obj) if len(v) >= 8]

    def clean(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: clean(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, key) for v in value]
        if isinstance(value, str):
            if value and _SECRET_KEY.search(key):
                return MASK
            override = _secret_override(value)  # a command-line override such as +model.hf_token=...
            if override:
                return f"{override[0]}={MASK}"
            for s in secrets:
                value = value.replace(s, MASK)
        return value

    return clean(obj)


def now() -> str:
    return dt.datetime.now(dt.UTC).astimezone().isoformat(timespec="seconds")


def git_info() -> dict[str, Any]:
    """Commit of the checkout kvexp runs from (null outside a git checkout) and whether it had edits."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=normal") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions["kvexp"] is None:  # running from a checkout that is not pip-installed
        import kvexp

        versions["kvexp"] = getattr(kvexp, "__version__", None)
    return versions


def device_info(device: Any = None) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "cuda_available": torch.cuda.is_available()}
    if device is not None:
        info["device"] = str(device)
        if getattr(device, "type", None) == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            info["gpu"] = torch.cuda.get_device_name(index)
            info["cuda"] = torch.version.cuda
    return info


def scheduler_info() -> dict[str, Any]:
    """Where the job runs: the scheduler's variables, plus `job_id` as SLURM and submitit name the job
    (`<array job>_<task>` for an array task, which is what `squeue`, `sacct`, `scancel` and the
    `.submitit/<job_id>` log folder use) and `restarts` (how often SLURM requeued it)."""
    info: dict[str, Any] = {k: os.environ[k] for k in SCHEDULER_ENV if k in os.environ}
    if "SLURM_JOB_ID" in info:
        array, task = info.get("SLURM_ARRAY_JOB_ID"), info.get("SLURM_ARRAY_TASK_ID")
        info["job_id"] = f"{array}_{task}" if array and task else info["SLURM_JOB_ID"]
        info["restarts"] = int(info.get("SLURM_RESTART_COUNT") or 0)
    elif "SUBMITIT_LOCAL_JOB_ID" in info:
        info["job_id"] = info["SUBMITIT_LOCAL_JOB_ID"]
    return info


def run_meta(
    *,
    device: Any = None,
    model_origin: str | None = None,
    overrides: list[str] | None = None,
    started_at: str | None = None,
    batch: dict[str, Any] | None = None,
) -> dict[str, Any]:
    meta = {
        "started_at": started_at or now(),
        "git": git_info(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": device_info(device),
        "model_origin": model_origin,
        "scheduler": scheduler_info(),
        "command": [sys.executable, *sys.argv],
        "overrides": overrides,
        "batch": batch,  # rows decoding at once and the bytes each costs (kvexp.engine.memory)
    }
    return scrub(meta)
