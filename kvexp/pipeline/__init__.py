"""The experiment pipeline: one Hydra job = one cell run over a dataset into its own folder.

    run_job(cfg, job_dir)  -> metrics   (kvexp.pipeline.job)

Job folder files and resume: kvexp.pipeline.folder; metrics: kvexp.pipeline.metrics; cell names and
resume compatibility: kvexp.pipeline.cell; signals: kvexp.pipeline.signals; tables: kvexp.pipeline.summary.
"""

from kvexp.pipeline.cell import cell_name, register_resolvers
from kvexp.pipeline.folder import JobFolder, JobFolderBusy, read_jsonl
from kvexp.pipeline.job import IncompatibleJobFolder, plan_job, run_job, sample_seed
from kvexp.pipeline.metrics import compute_metrics
from kvexp.pipeline.signals import JobInterrupted

__all__ = [
    "run_job",
    "plan_job",
    "sample_seed",
    "cell_name",
    "register_resolvers",
    "JobFolder",
    "JobFolderBusy",
    "IncompatibleJobFolder",
    "read_jsonl",
    "compute_metrics",
    "JobInterrupted",
]
