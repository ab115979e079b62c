"""Launching sweeps on SLURM (and locally) through submitit: kvexp's side of `hydra/launcher=slurm`.

    python -m kvexp.main -m hydra/launcher=slurm policy=h2o,snapkv budget=128,512

kvexp.launch.launcher: kvexp's submitit launchers, hydra-submitit-launcher's own plus
  - every job is waited on (a failed, cancelled or killed job does not stop the others from being
    collected) and the launcher exits non-zero naming each failed cell, its folder and its log;
  - in the job: SIGUSR2 (time limit ahead) or SIGTERM (preemption) -> the job folder is flushed and
    marked preempted -> submitit's checkpoint requeues the job (`scontrol requeue`) -> the requeued job
    resumes from samples.jsonl. A job cancelled with `scancel` is not requeued; it is reported failed.
kvexp.launch.shards: `dataset.shard.count=N` on a multirun command line runs all N shards.
kvexp.launch.axes: a swept key that the folder name does not show (policy.window=16,32) gets a folder
  per value.

Hydra only instantiates launchers from the `hydra_plugins` package, so `register_launchers()` (called
when kvexp.main is imported) makes kvexp's launchers known to Hydra as
`hydra_plugins.kvexp_launcher.SlurmLauncher` / `.LocalLauncher` (the `_target_` of
conf/hydra/launcher/slurm.yaml and local.yaml).
"""

from kvexp.launch.axes import name_swept_axes
from kvexp.launch.launcher import LocalLauncher, SlurmLauncher, SweepFailed, register_launchers
from kvexp.launch.shards import expand_shards

__all__ = ["SlurmLauncher", "LocalLauncher", "SweepFailed", "register_launchers", "expand_shards", "name_swept_axes"]
