"""One job: one cell (model x dataset x policy x budget) over a dataset, written to its own folder.

    plan    validate everything cheap (policy, budget, generation, model preset and path, dataset,
            model architecture) before any weights load
    resume  keep the finished rows of samples.jsonl (cutting a torn last line), skip their
            (problem, sample) pairs
    run     load the model, build the chat prompts, run the engine; grade and append each row as it
            finishes; traces for the first problems
    finish  metrics.json, status.json, W&B summary, a one-line table

status.json says where a job stands: running, done, failed (with the error and traceback) or
preempted (SIGTERM / Ctrl-C: files are flushed first, the process exits non-zero, and a rerun over
the same folder resumes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kvexp.errors import ConfigError
from kvexp.pipeline.cell import cell_name, differences, run_identity
from kvexp.pipeline.folder import (
    CONFIG,
    DONE,
    FAILED,
    METRICS,
    PREEMPTED,
    RUN_META,
    RUNNING,
    SAMPLES,
    STATUS,
    TRACES,
    CorruptedFile,
    JobFolder,
    JobFolderBusy,
    as_recorded_now,
    read_jsonl,
    read_status,
    record_budget,
    row_key,
    target_keys,
    write_json,
)
from kvexp.pipeline.meta import now, run_meta, scrub
from kvexp.pipeline.metrics import compute_metrics
from kvexp.pipeline.progress import Progress
from kvexp.pipeline.signals import JobInterrupted, interruption_name, signals_as_exceptions
from kvexp.pipeline.summary import format_table
from kvexp.pipeline.validation import check_generation, check_policy_params
from kvexp.stats import resolve_pass_k

log = logging.getLogger("kvexp")

HYDRA_DIR = ".hydra"  # Hydra's own name for its records of a launch
STATUS_INTERVAL_S = 5.0  # status.json is rewritten at most this often while rows stream in


class IncompatibleJobFolder(RuntimeError):
    """The folder holds results of a different configuration."""


@dataclass
class Plan:
    """Everything a job needs, validated, before its model loads."""

    policy: Any
    budget: Any
    settings: Any  # GenerationSettings without eos ids (they come with the tokenizer)
    auto_rows: bool  # generation.batch_size=auto: rows sized from memory once the model loads
    num_samples: int
    preset: Any
    source: Any
    problems: list
    identity: dict[str, Any]  # the cell's coordinates, first fields of metrics.json


def sample_seed(root: int, problem_id: str, sample_idx: int) -> int:
    """Seed of one (problem, sample): stable across runs, machines and batch layouts."""
    digest = hashlib.sha256(f"{root}/{problem_id}/{sample_idx}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def plan_job(cfg: DictConfig) -> Plan:
    """Validate the config and load the problems, cheapest checks first. Raises before any model loads."""
    from kvexp.data import load_problems
    from kvexp.engine import Budget, GenerationSettings, check_model_config
    from kvexp.models import ModelPreset, ModelSource
    from kvexp.policies import build_policy

    policy_params = OmegaConf.to_container(cfg.policy, resolve=True)
    check_policy_params(policy_params)
    policy = build_policy(policy_params)
    budget = Budget(tokens=cfg.budget.tokens, slack=cfg.budget.slack)
    budget.check(policy)

    gen = cfg.generation
    check_generation(OmegaConf.to_container(gen, resolve=True), cfg.seed)
    pass_k = resolve_pass_k(
        OmegaConf.to_container(cfg.metrics, resolve=True).get("pass_k") if "metrics" in cfg else None, gen.num_samples
    )
    if cfg.trace.n_problems < 0:
        raise ConfigError(f"trace.n_problems must be >= 0, got {cfg.trace.n_problems}; e.g. trace.n_problems=0")
    repetition = None
    if gen.repetition.enabled:
        repetition = {k: v for k, v in OmegaConf.to_container(gen.repetition, resolve=True).items() if k != "enabled"}
    auto_rows = gen.batch_size == "auto"
    settings = GenerationSettings(
        max_new_tokens=gen.max_new_tokens,
        batch_size=gen.max_batch_size if auto_rows else gen.batch_size,
        max_prefill_tokens=gen.max_prefill_tokens,
        temperature=float(gen.temperature),
        top_p=float(gen.top_p),
        top_k=int(gen.top_k),
        repetition=repetition,
    )

    preset = ModelPreset.from_cfg(OmegaConf.to_container(cfg.model, resolve=True))
    source = ModelSource(preset)
    source.check()

    ds = cfg.dataset
    common = ("name", "source", "limit", "shard", "seed")  # every dataset node has these; the rest are its own
    problems = load_problems(
        ds.name,
        source=ds.source,
        limit=ds.limit,
        shard_index=ds.shard.index,
        shard_count=ds.shard.count,
        seed=ds.seed,
        options={k: v for k, v in OmegaConf.to_container(ds, resolve=True).items() if k not in common},
    )
    check_model_config(source.config())

    recorded = budget.recorded(policy)
    identity = {
        "model": preset.name,
        "dataset": ds.name,
        "policy": policy.name,
        "budget": recorded,
        "slack": budget.slack if recorded is not None else None,
        "cell": cell_name(policy.name, recorded, budget.slack),
        "seed": cfg.seed,
        "num_samples": gen.num_samples,
        "max_new_tokens": gen.max_new_tokens,
        "temperature": settings.temperature,
        "shard": {"index": ds.shard.index, "count": ds.shard.count},
        "limit": ds.limit,
        "pass_k": pass_k,
    }
    return Plan(policy, budget, settings, auto_rows, gen.num_samples, preset, source, problems, identity)


class StatusFile:
    """status.json: state, counts, timestamps, and the error when the job did not finish."""

    def __init__(self, folder: JobFolder):
        self.path = folder.file(STATUS)
        self.data: dict[str, Any] = {
            "state": RUNNING,
            "started_at": now(),
            "updated_at": None,
            "finished_at": None,
            "error": None,
            "traceback": None,
        }
        self._written = 0.0

    @classmethod
    def existing(cls, folder: JobFolder) -> StatusFile:
        """The folder's status.json as it stands (its targets and counts kept), to amend it."""
        status = cls(folder)
        with contextlib.suppress(OSError):
            status.data.update(read_status(folder.path) or {})
        return status

    def update(self, force: bool = True, **fields: Any) -> None:
        self.data.update(fields)
        if force or time.monotonic() - self._written >= STATUS_INTERVAL_S:
            self.data["updated_at"] = now()
            write_json(self.path, scrub(self.data))
            self._written = time.monotonic()


def _check_resumable(folder: JobFolder, resolved: dict[str, Any]) -> None:
    """Refuse to mix rows of two configurations in one folder (a folder without rows is free to reuse,
    e.g. after a run that failed validation)."""
    if not folder.file(CONFIG).exists() or not read_jsonl(folder.file(SAMPLES)):
        return
    diff = _differences_from(folder, resolved)
    if diff:
        raise IncompatibleJobFolder(
            f"{folder.path} holds results of a different configuration ({'; '.join(diff[:5])}"
            f"{'; ...' if len(diff) > 5 else ''}); rerun with the same settings to resume it, or choose another "
            f"folder (hydra.run.dir=... / hydra.sweep.dir=...)"
        )


def run_job(
    cfg: DictConfig,
    job_dir: Path | str,
    *,
    sweep: str | None = None,
    overrides: list[str] | None = None,
    hydra_files: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or resume) one job in `job_dir`; returns its metrics. Raises on failure after recording it in
    status.json; JobInterrupted / KeyboardInterrupt propagate after the folder is marked preempted.

    The full cache launched at several budgets of one sweep shares one folder (kvexp.pipeline.cell), and
    records no budget: a launch that finds it busy returns at once ({}) when the job holding it runs the
    same recorded config.

    `hydra_files` (file name -> content) are Hydra's records of the launch (config, hydra config,
    overrides), written scrubbed to `.hydra/` once the folder is known to accept this config, so that a
    refused rerun leaves the folder's records alone (conf/config.yaml turns Hydra's own writing off)."""
    folder = JobFolder(job_dir)
    resolved = _recorded_config(cfg)
    with ExitStack() as held:
        try:
            held.enter_context(folder.locked())
        except JobFolderBusy as busy:
            if resolved["budget"]["tokens"] is not None or not _runs_the_same(folder, resolved):
                raise
            log.info(
                "%s: the full cache ignores the budget and another job (%s) runs this same config there; "
                "nothing to do here",
                folder.path,
                busy.holder,
            )
            return {}
        held.enter_context(signals_as_exceptions())
        try:
            _check_resumable(folder, resolved)
        except CorruptedFile as e:  # the folder's own rows are damaged: say so where users look
            if folder.file(STATUS).exists():
                StatusFile.existing(folder).update(state=FAILED, finished_at=now(), error=str(e), traceback=None)
            raise
        _note_a_dead_holder(folder)
        OmegaConf.save(OmegaConf.create(resolved), folder.file(CONFIG))
        for name, content in (hydra_files or {}).items():
            (folder.path / HYDRA_DIR).mkdir(exist_ok=True)
            OmegaConf.save(OmegaConf.create(scrub(content)), folder.path / HYDRA_DIR / name)
        status = StatusFile(folder)
        tracker, state, metrics, plan, rows = None, FAILED, None, None, None
        try:  # from the first write of status.json on, every way out leaves a final state in it
            status.update()
            write_json(folder.file(RUN_META), run_meta(overrides=overrides, started_at=status.data["started_at"]))
            plan = plan_job(cfg)
            finished, pending = _split_done(cfg, plan, folder)
            if pending or not _tracked_before(folder):  # a finished, already logged job: no second W&B run
                tracker = _start_tracker(cfg, plan, folder, sweep, resolved)
            metrics, rows = _execute(cfg, plan, folder, status, tracker, overrides, finished, pending)
            state = DONE
            return metrics
        except (JobInterrupted, KeyboardInterrupt) as e:
            state = PREEMPTED
            status.update(
                state=state, finished_at=now(), error=f"interrupted by {interruption_name(e)}; rerun to resume"
            )
            log.warning(
                "%s: interrupted by %s; rows so far are saved, rerun to resume", folder.path, interruption_name(e)
            )
            raise
        except BaseException as e:
            status.update(
                state=FAILED, finished_at=now(), error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()
            )
            raise
        finally:
            if tracker is not None:
                tracker.finish(
                    state=state,
                    metrics=metrics,
                    rows=rows if rows is not None else _target_rows(folder, plan)[0],  # read again on failure
                    traces=read_jsonl(folder.file(TRACES)),
                )


def _recorded_config(cfg: DictConfig) -> dict[str, Any]:
    """The config as the job folder records it (config.yaml): resolved, secrets masked, the budget none for a
    policy that never evicts (folder.record_budget), and the fingerprint of the weights."""
    from kvexp.policies import POLICY_NAMES, policy_class

    resolved = scrub(OmegaConf.to_container(cfg, resolve=True))
    name = resolved["policy"]["name"]  # an unknown name is refused by plan_job, in the job's status
    record_budget(resolved, evicts=name not in POLICY_NAMES or policy_class(name).evicts)
    resolved["model"]["fingerprint"] = _weights_fingerprint(cfg)
    return resolved


def _note_a_dead_holder(folder: JobFolder) -> None:
    """A status.json still `running` in a folder this process has just locked was left by a run that died
    without a word (kill -9, the OOM killer, a node crash): say so, since its rows are resumed."""
    try:
        state = (read_status(folder.path) or {}).get("state")
    except OSError:
        return
    if state == RUNNING:
        log.warning(
            "%s: the run before this one died without finishing (status.json still said running: killed, "
            "out of memory or a node crash); resuming from its rows",
            folder.path,
        )


def _start_tracker(cfg: DictConfig, plan: Plan, folder: JobFolder, sweep: str | None, resolved: dict[str, Any]):
    from kvexp.tracking import make_tracker

    ident = plan.identity
    config = {k: ident[k] for k in ("policy", "budget", "model", "dataset", "seed")}
    config["config"] = resolved
    return make_tracker(
        OmegaConf.to_container(cfg.logger, resolve=True),
        job_dir=folder.path,
        name=f"{ident['model']}/{ident['dataset']}/{ident['cell']}",
        group=sweep,
        config=config,
    )


def _target_rows(folder: JobFolder, plan: Plan) -> tuple[list[dict[str, Any]], int]:
    """The rows of samples.jsonl this job's config asks for, in problem order, and how many other rows
    the folder holds (e.g. from an earlier run with a larger dataset.limit), from one read."""
    order = target_keys([p.id for p in plan.problems], plan.num_samples)
    rows = {row_key(r): r for r in read_jsonl(folder.file(SAMPLES))}
    kept = [rows[k] for k in sorted(order, key=order.get) if k in rows]
    return kept, len(rows) - len(kept)


def _runs_the_same(folder: JobFolder, resolved: dict[str, Any], wait_s: float = 30.0) -> bool:
    """Whether the job holding `folder` runs `resolved` (up to what resuming may change). Its holder
    writes config.yaml just after taking the lock, so a missing file is waited for briefly."""
    deadline = time.monotonic() + wait_s
    while not folder.file(CONFIG).exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return not _differences_from(folder, resolved)


def _differences_from(folder: JobFolder, resolved: dict[str, Any]) -> list[str]:
    """Where `resolved` differs from the config in the folder's config.yaml, beyond what resuming may
    change (kvexp.pipeline.cell.run_identity)."""
    old = as_recorded_now(OmegaConf.to_container(OmegaConf.load(folder.file(CONFIG)), resolve=False))
    new = run_identity(resolved)
    old_model, new_model = old.get("model") or {}, new.get("model") or {}
    if "fingerprint" not in old_model:  # a folder written before weights were fingerprinted
        new_model.pop("fingerprint", None)
    elif old_model["fingerprint"] is not None and old_model["fingerprint"] == new_model.get("fingerprint"):
        # the same weights found another way (the organism's `source: organism` became a local path)
        old_model.pop("source", None)
        new_model.pop("source", None)
    return differences(run_identity(old), new)


def _weights_fingerprint(cfg: DictConfig) -> str | None:
    """The fingerprint of the weights the job would load (kvexp.models.ModelSource.fingerprint), part
    of what a folder's rows mean: a resume with other weights (e.g. retrained, under another model.path)
    is refused. None when it cannot be taken; plan_job then says what is wrong with the model."""
    from kvexp.models import ModelPreset, ModelSource

    try:
        return ModelSource(ModelPreset.from_cfg(OmegaConf.to_container(cfg.model, resolve=True))).fingerprint()
    except Exception:  # noqa: BLE001 - a bad model config is reported by plan_job, with its fix
        return None


def _split_done(cfg: DictConfig, plan: Plan, folder: JobFolder) -> tuple[list[dict[str, Any]], list[tuple[Any, int]]]:
    """(rows already in the folder, the (problem, sample) pairs still to run)."""
    finished = folder.finished_rows(drop_errors=bool(cfg.resume.retry_errors))
    done = {row_key(r) for r in finished}
    return finished, [(p, j) for p in plan.problems for j in range(plan.num_samples) if (p.id, j) not in done]


def _tracked_before(folder: JobFolder) -> bool:
    """Whether an earlier run of this folder logged to W&B (offline or online run files in it)."""
    return any((folder.path / "wandb").glob("*run-*"))


def _execute(
    cfg: DictConfig,
    plan: Plan,
    folder: JobFolder,
    status: StatusFile,
    tracker,
    overrides,
    finished: list[dict[str, Any]],
    pending: list[tuple[Any, int]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics.json's content, the cell's rows it was computed from)."""
    done = {row_key(r) for r in finished}
    n_target = len(plan.problems) * plan.num_samples
    status.update(
        n_target=n_target,
        n_done=n_target - len(pending),
        n_pending=len(pending),
        targets={"ids": [p.id for p in plan.problems], "num_samples": plan.num_samples},
    )
    if done:
        log.info("%s: resuming, %d of %d samples already done", folder.path, n_target - len(pending), n_target)

    t_start, generated_tokens, generation_s = time.perf_counter(), 0, 0.0
    if pending:
        generated_tokens, generation_s = _generate(cfg, plan, folder, status, tracker, pending, done, overrides)

    rows, n_outside = _target_rows(folder, plan)
    if n_outside > 0:
        log.warning(
            "%s: %d rows in samples.jsonl are for problems this config does not ask for (an earlier run "
            "with a larger dataset.limit?); they are kept but not counted",
            folder.path,
            n_outside,
        )
    metrics = compute_metrics(rows, **plan.identity)
    metrics.update(
        wall_s=round(time.perf_counter() - t_start, 3),
        throughput_tokens_per_s=generated_tokens / generation_s if generation_s > 0 else None,
    )
    write_json(folder.file(METRICS), metrics)
    counts = dict(n_target=n_target, n_done=len(rows), n_pending=n_target - len(rows), n_errors=metrics["n_errors"])
    if rows and metrics["n_errors"] == len(rows):
        first = next(r["error"] for r in rows)
        raise RuntimeError(f"every sample failed ({len(rows)}); the first error: {first.strip().splitlines()[-1]}")
    status.update(state=DONE, finished_at=now(), **counts)
    try:
        print(f"\n{folder.path}\n{format_table([metrics])}\n", flush=True)
    except OSError:  # a closed stdout (e.g. piped into `head`) must not fail a finished job
        pass
    return metrics, rows


def _generate(cfg, plan: Plan, folder: JobFolder, status: StatusFile, tracker, pending, done, overrides):
    """Load the model and run the pending (problem, sample) pairs; returns (tokens, seconds) generated."""
    from kvexp.engine import Engine, Request
    from kvexp.models import encode_prompt, format_prompt

    t0 = time.perf_counter()
    loaded = plan.source.load()
    log.info(
        "loaded %s from %s on %s in %.1f s", plan.preset.name, loaded.origin, loaded.device, time.perf_counter() - t0
    )
    tok = loaded.tokenizer
    problems = {p.id: p for p, _ in pending}
    prompts = {pid: format_prompt(tok, plan.preset, p.question) for pid, p in problems.items()}
    prompt_ids = {pid: encode_prompt(tok, text) for pid, text in prompts.items()}
    requests = [
        Request(key=(p.id, j), prompt_ids=prompt_ids[p.id], seed=sample_seed(cfg.seed, p.id, j)) for p, j in pending
    ]
    settings = dataclasses.replace(plan.settings, eos_token_ids=tuple(loaded.eos_token_ids))
    rows = _plan_rows(cfg, plan, loaded.model, settings, requests)
    settings = dataclasses.replace(settings, batch_size=rows["rows"])
    write_json(
        folder.file(RUN_META),
        run_meta(
            device=loaded.device,
            model_origin=loaded.origin,
            overrides=overrides,
            started_at=status.data["started_at"],
            batch=rows,
        ),
    )
    engine = Engine(loaded.model, plan.policy, plan.budget, settings)
    traced = {(p.id, 0) for p in plan.problems[: cfg.trace.n_problems]}

    done_per_problem: dict[str, int] = {}
    for pid, _ in done:
        done_per_problem[pid] = done_per_problem.get(pid, 0) + 1
    progress = Progress(
        problems=len(plan.problems),
        rows=len(plan.problems) * plan.num_samples,
        samples_per_problem=plan.num_samples,
        problems_done=sum(1 for p in plan.problems if done_per_problem.get(p.id, 0) >= plan.num_samples),
        rows_done=len(done),
        label=f"{plan.identity['cell']} {plan.identity['dataset']}",
    )
    n_errors = 0
    t_gen = time.perf_counter()
    try:
        with folder.appender() as writer:
            for out in engine.generate(requests, trace_keys=traced):
                pid, j = out.key
                row = _sample_row(
                    problems[pid], j, sample_seed(cfg.seed, pid, j), prompts[pid], out, tok, plan.identity["dataset"]
                )
                writer.write(row, trace=out.trace)
                n_errors += row["error"] is not None
                progress.update(pid, out.n_output_tokens, already_done=done_per_problem.get(pid, 0))
                tracker.log_sample(
                    row,
                    {
                        "samples_done": progress.rows_done,
                        "problems_done": progress.problems_done,
                        "tokens_per_s": progress.tokens_per_s,
                    },
                )
                status.update(
                    force=False,
                    n_done=progress.rows_done,
                    n_pending=progress.rows - progress.rows_done,
                    n_errors_this_run=n_errors,
                )
    finally:
        progress.close()
    return progress.tokens, time.perf_counter() - t_gen


def _plan_rows(cfg, plan: Plan, model, settings, requests) -> dict[str, Any]:
    """How many rows decode at once: generation.batch_size, or with `auto` what fits in memory
    (kvexp.engine.memory); logged, and recorded in run_meta.json."""
    from kvexp.engine.memory import plan_for_model

    gen = cfg.generation
    rows = plan_for_model(
        model,
        plan.policy,
        plan.budget.tokens,
        [len(r.prompt_ids) for r in requests],
        max_new_tokens=settings.max_new_tokens,
        max_rows=settings.batch_size,
        memory_gb=gen.memory_gb,
        max_prefill_tokens=settings.max_prefill_tokens,
        fixed_rows=None if plan.auto_rows else settings.batch_size,
    ).as_dict()
    why = f"auto, limited by {rows['limited_by']}" if plan.auto_rows else f"generation.batch_size={gen.batch_size}"
    log.info(
        "decoding %d rows at once (%s): %.1f MiB per row (KV %.1f, policy state %.1f, workspace %.1f), "
        "%d KV slots per row",
        rows["rows"],
        why,
        rows["bytes_per_row"] / 2**20,
        rows["per_row"]["kv"] / 2**20,
        rows["per_row"]["policy_state"] / 2**20,
        rows["per_row"]["workspace"] / 2**20,
        rows["capacity"],
    )
    return rows


def _sample_row(problem, sample_idx: int, seed: int, prompt: str, out, tokenizer, dataset: str) -> dict[str, Any]:
    """One samples.jsonl row (README, "Reading results"), graded. A grader that raises makes an error row."""
    from kvexp.grading import grade

    ids = list(out.output_ids)
    # the closing EOS token is kept in output_ids but not in the text the grader reads
    text_ids = ids[:-1] if out.stop_reason == "eos" and ids else ids
    output = tokenizer.decode(text_ids, skip_special_tokens=False) if text_ids else ""
    prediction, correct, error = None, False, out.error
    if error is None:
        try:
            prediction, correct = grade(dataset, output, problem.gold)
        except Exception as e:  # noqa: BLE001 - one bad grade must not stop the job; rows can be re-graded
            error = f"grading failed: {type(e).__name__}: {e}"
    return {
        "id": problem.id,
        "sample_idx": sample_idx,
        "seed": seed,
        "prompt": prompt,
        "output": output,
        "output_ids": ids,
        "prediction": prediction,
        "gold": problem.gold,
        "correct": bool(correct) and error is None,
        "n_prompt_tokens": out.n_prompt_tokens,
        "n_output_tokens": out.n_output_tokens,
        "stop_reason": out.stop_reason,
        "peak_resident_tokens": out.peak_resident_tokens,
        "n_evicted_tokens": out.n_evicted_tokens,
        "kv_bytes_peak": out.kv_bytes_peak,
        "prefill_s": out.prefill_s,
        "decode_s": out.decode_s,
        "prompt_kept_share": out.prompt_kept_share,
        "prompt_kept_any": out.prompt_kept_any,
        "error": error,
    }
