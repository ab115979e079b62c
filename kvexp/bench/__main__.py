"""`make bench`: decode speed of kvexp (full cache and every policy) against transformers' `generate`.

    python -m kvexp.bench --device cpu --out bench.json            # default matrix (~20 min on 2 cores)
    python -m kvexp.bench --quick --out /tmp/bench.json            # 1-minute smoke on tiny models
    python -m kvexp.bench --full                                   # the whole cross product (hours on a CPU)
    python -m kvexp.bench --device cuda --dtype bfloat16           # llama8b_shaped on a GPU
    python -m kvexp.bench --models shaped_random --policies h2o,snapkv --reps 3

Writes bench.json (machine info, one row per configuration, the targets) and prints a table and each
target's ratio with PASS/FAIL. The exit status is 0 even when a target fails: this is a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path

import torch

from kvexp.bench.models import MODEL_NAMES, load_model, random_prompts
from kvexp.bench.plan import EVICTING, Group, Plan, build_plan
from kvexp.bench.report import format_rows, format_targets, format_workload
from kvexp.bench.runner import RunSpec, run, summarize
from kvexp.bench.targets import evaluate
from kvexp.bench.workload import auto_runs, batching_runs, ops_table, smollm2_runs, state_table, workload_plan
from kvexp.files import replaced_atomically
from kvexp.policies import POLICY_NAMES

SCHEMA_VERSION = 1


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m kvexp.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--dtype", default=None, help="float32 (default on cpu) or bfloat16 (default on cuda)")
    p.add_argument("--out", default="bench.json", help="where to write the JSON results (default bench.json)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="1-minute smoke run on tiny random models")
    mode.add_argument("--full", action="store_true", help="the whole cross product (hours on a CPU)")
    p.add_argument("--models", type=_csv, default=None, help=f"comma-separated subset of: {', '.join(MODEL_NAMES)}")
    p.add_argument(
        "--policies",
        type=_csv,
        default=None,
        help=f"comma-separated eviction policies to run (full and generate always run): {', '.join(EVICTING)}",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all usable cores)")
    p.add_argument(
        "--reps",
        type=int,
        default=None,
        help="repetitions of every run, alternating forward/reverse order; figures are medians "
        "(default: 2 for the random models, 1 for SmolLM2 and in --quick/--full)",
    )
    p.add_argument("--new-tokens", type=int, default=None, help="override the short length (default 512)")
    p.add_argument("--long-tokens", type=int, default=None, help="override the long length (default 4096)")
    p.add_argument(
        "--no-workload",
        dest="workload",
        action="store_false",
        help="skip the workload section (continuous vs static batching, auto rows, policy state "
        "sizes, aten ops per step)",
    )
    p.add_argument("--only-workload", action="store_true", help="run the workload section alone")
    args = p.parse_args(argv)
    if args.policies is not None:
        # a policy that never evicts (the full cache) always runs; an unknown name is refused below
        args.policies = [name for name in args.policies if name in EVICTING or name not in POLICY_NAMES]
    for name in args.policies or []:
        if name not in EVICTING:
            p.error(f"unknown policy {name!r} in --policies; choose from {', '.join(EVICTING)} (full always runs)")
    for name in args.models or []:
        if name not in MODEL_NAMES:
            p.error(f"unknown model {name!r} in --models; choose from {', '.join(MODEL_NAMES)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but torch sees no CUDA device")
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    if args.reps is not None and args.reps < 1:
        p.error("--reps must be >= 1")
    return args


def machine_info(device: torch.device, threads: int) -> dict:
    import transformers

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "device": str(device),
        "load_average_start": _loadavg(),
        "omp_wait_policy": _omp_wait_policy(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _omp_wait_policy() -> str:
    import kvexp.bench as pkg

    if pkg.TORCH_LOADED_FIRST and not pkg.OMP_WAIT_POLICY_PRESET:
        return "runtime default (torch was imported before kvexp.bench could set PASSIVE)"
    return os.environ.get("OMP_WAIT_POLICY", "")


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _warm_spec(spec: RunSpec, plan: Plan) -> tuple[RunSpec, int]:
    """A short run of the same kind: for an evicting policy, a prompt that already fills the budget,
    so the warm-up evicts from its first steps."""
    if spec.budget is None:
        return RunSpec(**{**spec.__dict__, "new_tokens": min(spec.new_tokens, 8)}), plan.prompt_len
    return RunSpec(**{**spec.__dict__, "new_tokens": min(spec.new_tokens, 2 * (spec.slack or 1) + 2)}), spec.budget


def run_group(group: Group, plan: Plan, device: torch.device, dtype: torch.dtype, log) -> list[dict]:
    t_load = time.perf_counter()
    model = load_model(group.model, device, dtype)
    log(
        f"\n== {group.name}: {len(group.specs)} runs x {group.reps} rep(s) "
        f"(model ready in {time.perf_counter() - t_load:.1f}s)"
    )
    vocab = model.config.vocab_size
    prompts = {b: random_prompts(vocab, b, plan.prompt_len) for b in {s.batch for s in group.specs}}
    failed: dict[RunSpec, str] = {}
    for spec in group.specs:  # warm-up
        warm, length = _warm_spec(spec, plan)
        try:
            run(model, warm, random_prompts(vocab, spec.batch, length, seed=99))
        except Exception as e:  # e.g. a budget the policy refuses: recorded as an error row
            failed[spec] = f"{type(e).__name__}: {e}"
            log(f"   skip {spec.label()}: {failed[spec].splitlines()[0]}")
    timings: dict[RunSpec, list] = {s: [] for s in group.specs}
    for rep in range(group.reps):
        order = group.specs if rep % 2 == 0 else group.specs[::-1]
        for spec in order:
            if spec in failed:
                continue
            try:
                t = run(model, spec, prompts[spec.batch])
            except Exception as e:
                failed[spec] = f"{type(e).__name__}: {e}"
                log(f"   FAILED {spec.label()}: {failed[spec].splitlines()[0]}")
                continue
            timings[spec].append(t)
            log(
                f"   {spec.label():<62} {spec.batch * t.steps / t.decode_s:9.1f} tok/s"
                f"  {1000 * t.decode_s / t.steps:8.2f} ms/step  (rep {rep + 1})"
            )
    rows = []
    for spec in group.specs:
        if spec in failed or not timings[spec]:
            rows.append({**spec.__dict__, "prompt_len": plan.prompt_len, "error": failed.get(spec, "no timing")})
        else:
            rows.append({**summarize(spec, timings[spec], plan.block, plan.prompt_len, plan.budget), "error": None})
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    torch.set_num_threads(threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    mode = "quick" if args.quick else "full" if args.full else "default"
    plan = build_plan(
        mode,
        device.type,
        args.models,
        args.policies,
        reps=args.reps,
        new_tokens=args.new_tokens,
        long_tokens=args.long_tokens,
    )
    if not plan.groups:
        print(
            "nothing to run: --models selects no group of this plan "
            f"(models in the {mode} plan: {', '.join(build_plan(mode, device.type, None, args.policies).models())})",
            file=sys.stderr,
        )
        return 2

    def log(msg):
        print(msg, flush=True)

    info = machine_info(device, threads)
    log(
        f"kvexp bench ({mode}): {len(plan.groups)} groups, {sum(len(g.specs) for g in plan.groups)} runs; "
        f"torch {info['torch']}, transformers {info['transformers']}, {threads} threads, {info['cpu_model']}, "
        f"device {device}, {args.dtype}; load average {info['load_average_start']}"
    )
    load = info["load_average_start"]
    if device.type == "cpu" and load and load[0] > 0.5:
        log(
            f"note: load average {load[0]} before the bench started: other processes share these cores, so "
            f"absolute speeds are noisy; the targets compare runs made side by side"
        )
    out = Path(args.out)
    result = {
        "schema_version": SCHEMA_VERSION,
        "mode": mode,
        "machine": info,
        "settings": {
            "dtype": args.dtype,
            "prompt_len": plan.prompt_len,
            "reps": {g.name: g.reps for g in plan.groups},
            "target_budget": plan.budget,
            "slack_hi": plan.slack_hi,
            "slack_lo": plan.slack_lo,
            "long_tokens": plan.long_tokens,
            "batch_hi": plan.batch_hi,
            "robust_block_steps": plan.block,
            "policies": list(args.policies or EVICTING),
            "models": plan.models(),
            "timing": "decode only, per step: kvexp's engine observer hook and a StoppingCriteria "
            "timestamp in transformers' generate (on CUDA: generate total minus a prefill-only "
            "forward); greedy; EOS disabled; random prompts",
            "target_figure": "decode_tokens_per_s_robust: batch / median over blocks of "
            f"{plan.block} steps of the block's mean step time",
        },
        "rows": [],
        "targets": [],
    }
    t_start = time.perf_counter()
    for group in [] if args.only_workload else plan.groups:
        result["rows"] += run_group(group, plan, device, dtype, log)
        result["targets"] = evaluate(result["rows"], plan)
        _write(out, result)
    if args.workload or args.only_workload:
        result["workload"], targets = run_workload_section(workload_plan(mode, device.type), device, dtype, log)
        result["targets"] += targets
        _write(out, result)
    result["machine"]["load_average_end"] = _loadavg()
    result["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    measured = [t for t in result["targets"] if t["status"] in ("PASS", "FAIL")]
    result["targets_pass"] = bool(measured) and all(t["status"] == "PASS" for t in measured)
    _write(out, result)

    log("\n" + format_rows(result["rows"]))
    log("\n" + format_targets(result["targets"]))
    failed = [t for t in result["targets"] if t["status"] == "FAIL"]
    cpu_checked = [t for t in measured if t.get("cpu_status")]
    cpu_failed = [t for t in cpu_checked if t["cpu_status"] == "FAIL"]
    log(
        f"\n{len(measured) - len(failed)} of {len(measured)} targets pass"
        + (f"; {len(failed)} FAIL (a measurement: the exit status stays 0)" if failed else "")
        + f" (CPU-time cross-check: {len(cpu_checked) - len(cpu_failed)} of {len(cpu_checked)} pass)"
        + f". Elapsed {result['elapsed_s']:.0f}s; load average {result['machine']['load_average_end']} "
        f"(other processes on a shared machine slow runs down). Results: {out}"
    )
    return 0


def run_workload_section(wplan, device, dtype, log) -> tuple[dict, list[dict]]:
    """Continuous vs static batching, SmolLM2 on GSM8K, auto rows, policy state sizes, ops per step."""
    section, targets = {"plan": wplan.__dict__}, []
    log(
        f"\n== workload: {wplan.requests} requests on {wplan.model}, heavy-tailed lengths (cap {wplan.cap}), "
        f"{wplan.rows} rows, {wplan.policy} B{wplan.budget}/S{wplan.slack}"
    )
    section["batching"], t = batching_runs(wplan, device, dtype, log)
    targets += t
    if wplan.smollm2_problems:
        log(f"== workload: SmolLM2-135M on {wplan.smollm2_problems} GSM8K prompts, lengths from its EOS")
        section["smollm2"] = smollm2_runs(wplan, device, dtype, log)
    log(
        f"== workload: auto rows, full cache (cap {wplan.auto_cap}) vs {wplan.policy} B{wplan.auto_budget} "
        f"on {wplan.heavy_model}"
    )
    section["auto"], t = auto_runs(wplan, device, dtype, log)
    targets += t
    section["state"], t = state_table(wplan)
    targets += t
    section["ops"], t = ops_table(wplan, device, dtype)
    targets += t
    log("\n" + format_workload(section))
    return section, targets


def _write(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as f:
        json.dump(result, f, indent=1, default=str)


if __name__ == "__main__":
    sys.exit(main())
