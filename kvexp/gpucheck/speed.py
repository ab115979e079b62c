"""GPU-only checks on the bench's Llama-3.1-8B-shaped model (kvexp.bench.models, `llama8b_shaped`) with
random bf16 weights, built directly on the device:

- bandwidth: what a device-to-device copy moves per second (bytes read + written);
- batch 1: the full cache's decode speed against the bound weights bytes / bandwidth (INFO);
- scale: `batch_size=auto` (kvexp.engine.memory) for an evicting policy at B=640 and for the full cache
  at 8k generated tokens; each row decodes a few steps from its steady state, rows and tokens/s (INFO);
- memory: the plan's bytes (weights, shared workspace, rows x bytes per row) against
  torch.cuda.max_memory_allocated over each auto run, within 15%.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kvexp.bench.models import load_model, random_prompts
from kvexp.bench.runner import KVEXP, RunSpec, run_kvexp
from kvexp.bench.workload import run_workload
from kvexp.engine import Request
from kvexp.engine.memory import GiB, plan_for_model, weight_bytes
from kvexp.gpucheck.verdicts import FAIL, Findings, Verdict, info, ratio_within
from kvexp.policies import build_policy, policy_class

MEMORY_TOLERANCE = 0.15


@dataclass(frozen=True)
class GpuPlan:
    """The GPU section's sizes. The auto comparison is shortened to fit a slot: every row decodes
    `steps` tokens from its steady state. The evicting policy's prompts fill its budget, so it evicts
    from its first step; the full cache's prompts reach the middle of an 8k generation (prompt_len +
    full_new_tokens / 2), so each step attends over the run's mean length, and its rows are planned for
    the whole 8k."""

    model: str = "llama8b_shaped"  # a bench preset (the tests run a tiny one on the CPU)
    policy: str = "h2o"
    budget: int = 640
    slack: int = 1
    full_new_tokens: int = 8192
    prompt_len: int = 256
    steps: int = 64
    max_rows: int = 1024
    max_prefill_tokens: int = 8192
    batch1_tokens: int = 256
    copy_mib: int = 2048


def checks(plan: GpuPlan) -> dict[str, str]:
    """The checks `run` makes, by name, with what each compares (on a CPU: the NOT RUN lines)."""
    evicting = f"{plan.policy} B={plan.budget}"
    return {
        "gpu.bandwidth": "device-to-device copy, bytes read + written per second",
        "gpu.batch1": f"{plan.model}, bf16, batch 1, full cache: tok/s vs weights bytes / copy bandwidth",
        f"gpu.memory.{plan.policy}": f"auto {evicting}: peak allocated / planned bytes, within {MEMORY_TOLERANCE:.0%}",
        "gpu.memory.full": f"auto full cache: peak allocated / planned bytes, within {MEMORY_TOLERANCE:.0%}",
        "gpu.auto.rows": f"auto rows: {evicting} vs the full cache at {plan.full_new_tokens} new tokens",
        "gpu.auto.tokens": f"decode tok/s, {plan.steps} steps a row: {evicting} vs the full cache",
    }


def _failed(check: str, error: Exception) -> Verdict:
    return Verdict(check, FAIL, type(error).__name__, (str(error).splitlines() or [""])[0])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, mib: int, reps: int = 10) -> float:
    """Bytes per second a device-to-device copy moves, counting what it reads and what it writes."""
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    _sync(device)
    seconds = time.perf_counter() - t0
    del src, dst
    return 2 * mib * 2**20 * reps / seconds


def batch1_speed(model, plan: GpuPlan) -> dict:
    """Full-cache decode at batch 1 through the bench's timed run (a short warm-up first)."""
    prompts = random_prompts(model.config.vocab_size, 1, 64)
    run_kvexp(model, RunSpec(plan.model, KVEXP, "full", None, None, 8, 1), prompts)
    t = run_kvexp(model, RunSpec(plan.model, KVEXP, "full", None, None, plan.batch1_tokens, 1), prompts)
    return {"tokens_per_s": t.steps / t.decode_s, "ms_per_step": 1000 * t.decode_s / t.steps, "steps": t.steps}


def stop_if_fell_back(rows: int):
    """An observer that stops a batch the engine is rerunning one request at a time (after a failed
    forward, e.g. out of memory): hundreds of requests alone would outlast the slot."""

    def guard(cache, keys):
        if cache.ctx.prefill and len(keys) < rows:
            ooms = torch.cuda.memory_stats().get("num_ooms", 0) if torch.cuda.is_available() else 0
            raise RuntimeError(
                f"the batch of {rows} rows failed and the engine fell back to one request at a time "
                f"(CUDA out-of-memory errors so far: {ooms})"
            )

    return guard


def auto_run(model, policy_name: str, plan: GpuPlan, log: Callable[[str], None]) -> dict:
    """One `batch_size=auto` run: rows planned from the free memory, one request per row, each decoding
    plan.steps tokens; its figures, the plan and the peak memory allocated (on a GPU; None elsewhere)."""
    device = next(model.parameters()).device
    if not policy_class(policy_name).evicts:
        prompt_len, cap = plan.prompt_len + plan.full_new_tokens // 2, plan.full_new_tokens // 2
    else:
        prompt_len, cap = plan.budget, plan.full_new_tokens
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()  # the plan reads the free memory: give back what earlier runs cached
    rows = plan_for_model(
        model,
        build_policy(policy_name),
        plan.budget,
        [prompt_len] * plan.max_rows,
        max_new_tokens=cap,
        max_rows=plan.max_rows,
        memory_gb=None,
        max_prefill_tokens=plan.max_prefill_tokens,
    )
    prompts = random_prompts(model.config.vocab_size, rows.rows, prompt_len, seed=8)
    requests = [Request(i, p, seed=i, max_new_tokens=plan.steps) for i, p in enumerate(prompts)]
    label = "full" if policy_name == "full" else f"{policy_name} B={plan.budget}"
    log(f"{'':9}(auto, {label}: {rows.rows} rows, {rows.limited_by}; prompts {prompt_len}, capacity {rows.capacity})")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    result = run_workload(
        model,
        policy_name,
        plan.budget,
        plan.slack,
        requests,
        rows=rows.rows,
        continuous=True,
        max_new_tokens=cap,
        label=label,
        guard=stop_if_fell_back(rows.rows),
    )
    planned = weight_bytes(model) + rows.shared_bytes + rows.rows * rows.per_row.total
    return {
        **result,
        "prompt_len": prompt_len,
        "plan": rows.as_dict(),
        "planned_bytes": planned,
        "peak_allocated_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
    }


def run(device: torch.device, plan: GpuPlan, findings: Findings) -> None:
    """Every GPU-only check, into `findings` (section "gpu"); a part that raises becomes a FAIL and the
    next one still runs."""
    figures, what, emit = findings.section("gpu"), checks(plan), findings.add
    figures["plan"] = plan.__dict__

    bandwidth = copy_bandwidth(device, plan.copy_mib)
    figures["copy_bandwidth_bytes_per_s"] = bandwidth
    emit(info("gpu.bandwidth", what["gpu.bandwidth"], f"{bandwidth / 1e9:.0f} GB/s"))
    t0 = time.perf_counter()
    model = load_model(plan.model, device, torch.bfloat16)
    weights = weight_bytes(model)
    figures["model"] = {"name": plan.model, "weight_bytes": weights, "build_s": round(time.perf_counter() - t0, 1)}
    try:
        b1 = batch1_speed(model, plan)
        bound = bandwidth / weights
        b1.update(bound_tokens_per_s=bound, ratio=b1["tokens_per_s"] / bound)
        figures["batch1"] = b1
        emit(
            info(
                "gpu.batch1",
                f"{what['gpu.batch1']} ({weights / 1e9:.1f} GB: bound {bound:.0f} tok/s)",
                f"{b1['tokens_per_s']:.1f} tok/s, ratio {b1['ratio']:.2f}",
            )
        )
    except Exception as e:  # recorded as a verdict; the slot goes on
        emit(_failed("gpu.batch1", e))
    runs = figures["auto"] = {}
    for name in (plan.policy, "full"):
        try:
            runs[name] = auto_run(model, name, plan, findings.log)
        except Exception as e:
            emit(_failed(f"gpu.auto.{name}", e))
            continue
        r = runs[name]
        if r["peak_allocated_bytes"] is None:
            continue
        emit(
            ratio_within(
                f"gpu.memory.{name}",
                f"auto {r['run']}: peak allocated {r['peak_allocated_bytes'] / GiB:.1f} GiB / "
                f"planned {r['planned_bytes'] / GiB:.1f} GiB ({r['rows']} rows)",
                r["peak_allocated_bytes"],
                r["planned_bytes"],
                MEMORY_TOLERANCE,
            )
        )
    if len(runs) == 2:
        ev, full = runs[plan.policy], runs["full"]
        emit(
            info(
                "gpu.auto.rows",
                what["gpu.auto.rows"],
                f"{ev['rows']} vs {full['rows']} = {ev['rows'] / full['rows']:.1f}x",
            )
        )
        emit(
            info(
                "gpu.auto.tokens",
                what["gpu.auto.tokens"],
                f"{ev['decode_tokens_per_s']:.0f} vs {full['decode_tokens_per_s']:.0f} = "
                f"{ev['decode_tokens_per_s'] / full['decode_tokens_per_s']:.1f}x",
            )
        )
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
