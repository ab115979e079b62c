"""Throughput on a workload, not a fixed-length decode: many requests whose lengths are heavy-tailed
like reasoning traces, through the engine's continuous batching, static batching and `auto` rows;
plus what a policy's state weighs and how many operations a decode step launches.

- lengths: log-normal (sigma 1) with its mean near 1/6 of the cap, clipped to [1, cap], imposed per
  request (`Request.max_new_tokens`, EOS off) so random-weight models stand in for real ones; the
  SmolLM2 run takes real GSM8K prompts and stops at the model's own EOS.
- figures: total tokens / wall time of the whole workload (prefills included); decode tokens / decode
  time (prefills left out); utilization: live rows / allocated rows, averaged over decode steps.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kvexp.bench.models import RANDOM_MODELS, load_model, random_prompts, smollm2_preset
from kvexp.bench.plan import EVICTING
from kvexp.bench.runner import bench_policy
from kvexp.bench.targets import check, check_at_most
from kvexp.engine import Budget, Engine, GenerationSettings, Request
from kvexp.engine.memory import GiB, ModelShape, plan_for_model, plan_rows, row_capacity, row_cost, weight_bytes
from kvexp.policies import POLICY_NAMES, build_policy


@dataclass(frozen=True)
class WorkloadPlan:
    model: str  # random-weight model of the synthetic workload and the ops count
    heavy_model: str  # the model of the `auto` comparison (KV-heavy: memory goes to the cache)
    requests: int
    cap: int  # max_new_tokens of the synthetic workload
    rows: int
    policy: str
    budget: int
    slack: int
    prompt_len: int = 64
    auto_requests: int = 24
    auto_cap: int = 4096  # the full cache's max_new_tokens in the `auto` comparison
    auto_budget: int = 256
    auto_full_rows: float = 3.5  # the memory figure fits this many full-cache rows
    auto_max_rows: int = 256  # the cap on `auto` rows (generation.max_batch_size)
    smollm2_problems: int = 0  # 0: no SmolLM2 run
    smollm2_cap: int = 256
    ops_prompt: int = 300
    ops_steps: int = 64
    state_budget: int = 640  # B of the state-size table (R-KV's b=512 plus its 128-step buffer)


def workload_plan(mode: str, device: str) -> WorkloadPlan:
    if mode == "quick":
        return WorkloadPlan(
            "tiny_shaped",
            "tiny_kv_heavy",
            requests=12,
            cap=64,
            rows=4,
            policy="h2o",
            budget=48,
            slack=8,
            prompt_len=16,
            auto_requests=32,
            auto_cap=256,
            auto_budget=48,
            auto_max_rows=16,
            ops_prompt=64,
            ops_steps=16,
        )
    if device == "cuda":
        return WorkloadPlan(
            "llama8b_shaped",
            "llama8b_shaped",
            requests=256,
            cap=16384,
            rows=64,
            policy="h2o",
            budget=640,
            slack=128,
            prompt_len=256,
            auto_requests=512,
            auto_cap=16384,
            auto_budget=640,
            auto_full_rows=0,
            auto_max_rows=1024,
        )
    # auto: at most 16 rows, so the 48 requests keep them busy for a while (a steady state to measure)
    return WorkloadPlan(
        "shaped_random",
        "kv_heavy_random",
        requests=48,
        cap=512,
        rows=8,
        policy="h2o",
        budget=256,
        slack=16,
        auto_requests=48,
        auto_max_rows=16,
        smollm2_problems=16,
    )


def heavy_tailed_lengths(n: int, cap: int, seed: int = 0, sigma: float = 1.0) -> list[int]:
    """n lengths, log-normal with mean cap/6 before clipping to [1, cap]."""
    g = torch.Generator().manual_seed(seed)
    mu = math.log(cap / 6) - sigma**2 / 2
    draws = torch.exp(mu + sigma * torch.randn(n, generator=g, dtype=torch.float64))
    return [int(min(cap, max(1, round(x)))) for x in draws.tolist()]


def static_utilization(lengths: list[int], rows: int) -> float:
    """Live rows / allocated rows over the decode steps of static batches in request order (a
    request of L tokens takes L - 1 decode steps: its first token comes from the prefill)."""
    batches = [lengths[i : i + rows] for i in range(0, len(lengths), rows)]
    return sum(n - 1 for n in lengths) / sum(rows * (max(b) - 1) for b in batches)


def run_workload(
    model,
    policy_name: str,
    budget: int | None,
    slack: int,
    requests: list[Request],
    *,
    rows: int,
    continuous: bool,
    max_new_tokens: int,
    eos: tuple[int, ...] = (),
    label: str,
    guard: Callable[[object, list], None] | None = None,
) -> dict:
    """guard(cache, keys): called first after every forward pass, e.g. to stop a run early by raising."""
    policy = bench_policy(policy_name)
    live, allocated, events = [], [], []  # events: (time, prefill?, tokens this forward produced)

    def watch(cache, keys):
        if guard:
            guard(cache, keys)
        n = sum(k is not None for k in keys)
        events.append((time.perf_counter(), cache.ctx.prefill, len(cache.ctx.incoming) if cache.ctx.prefill else n))
        if not cache.ctx.prefill:
            live.append(n)
            allocated.append(rows)

    settings = GenerationSettings(
        max_new_tokens=max_new_tokens, batch_size=rows, continuous=continuous, eos_token_ids=eos
    )
    engine = Engine(model, policy, Budget.for_policy(policy, budget, slack), settings, observer=watch)
    t0, cpu0 = engine.synchronize(), time.process_time()
    outputs = list(engine.generate(requests))
    wall, cpu = engine.synchronize() - t0, time.process_time() - cpu0
    errors = [o.error for o in outputs if o.error]
    if errors:
        raise RuntimeError(f"{label}: the engine reported an error:\n{errors[0]}")
    tokens = sum(o.n_output_tokens for o in outputs)
    # steady state: from the first decode step to the last admission, while requests still wait (a
    # long grid's regime); the drain at the end, rows emptying one by one, is left out
    last_admission = max(i for i, (_, prefill, _) in enumerate(events) if prefill)
    first_decode = next((i for i, (_, prefill, _) in enumerate(events) if not prefill), None)
    steady = None
    if first_decode is not None and last_admission > first_decode:
        window = events[first_decode + 1 : last_admission + 1]
        steady = sum(n for _, _, n in window) / (events[last_admission][0] - events[first_decode][0])
    # decode alone: tokens over time between consecutive decode forwards (on a GPU the host runs ahead, so
    # an interval that follows a prefill would carry the prefill's time)
    decode = [i for i in range(1, len(events)) if not events[i][1] and not events[i - 1][1]]
    decode_s = sum(events[i][0] - events[i - 1][0] for i in decode)
    return {
        "run": label,
        "policy": policy_name,
        "budget": budget if policy.evicts else None,
        "rows": rows,
        "continuous": continuous,
        "requests": len(requests),
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": tokens / wall,
        "steady_tokens_per_s": steady,
        "decode_tokens_per_s": sum(events[i][2] for i in decode) / decode_s if decode_s > 0 else None,
        "tokens_per_cpu_s": tokens / cpu if cpu > 0 else None,
        "utilization": sum(live) / max(1, sum(allocated)),
        "decode_steps": len(live),
        "mean_length": tokens / len(outputs),
        "max_length": max(o.n_output_tokens for o in outputs),
    }


def batching_runs(plan: WorkloadPlan, device, dtype, log) -> tuple[list[dict], list[dict]]:
    """Continuous vs static batching on heavy-tailed lengths, and continuous on equal lengths."""
    model = load_model(plan.model, device, dtype)
    prompts = random_prompts(model.config.vocab_size, plan.requests, plan.prompt_len, seed=7)
    lengths = heavy_tailed_lengths(plan.requests, plan.cap)
    mean = round(sum(lengths) / len(lengths))
    heavy = [Request(i, p, seed=i, max_new_tokens=n) for i, (p, n) in enumerate(zip(prompts, lengths))]
    equal = [Request(i, p, seed=i, max_new_tokens=mean) for i, p in enumerate(prompts)]
    common = dict(rows=plan.rows, max_new_tokens=plan.cap)
    args = (model, plan.policy, plan.budget, plan.slack)
    run_workload(*args, heavy[: plan.rows], continuous=True, label="warm-up", **common)
    runs = []
    for label, reqs, continuous in (
        ("static, heavy-tailed", heavy, False),
        ("continuous, heavy-tailed", heavy, True),
        ("continuous, equal lengths", equal, True),
    ):
        runs.append({"model": plan.model, **run_workload(*args, reqs, continuous=continuous, label=label, **common)})
        log(_line(runs[-1]))
    static, cont, ideal = runs
    static["utilization_expected"] = static_utilization(lengths, plan.rows)
    what = (
        f"{plan.model} {plan.requests} requests, cap {plan.cap}, {plan.rows} rows, "
        f"{plan.policy} B{plan.budget}/S{plan.slack}"
    )
    targets = [
        check(
            "continuous_vs_static",
            f"{what}: continuous / static tok/s (static utilization {static['utilization']:.2f})",
            num=cont["tokens_per_s"],
            den=static["tokens_per_s"],
            threshold=1.6,
            num_label="continuous",
            den_label="static",
            cpu=(cont, static),
        ),
        check(
            "continuous_vs_equal_lengths",
            f"{what}: heavy-tailed / equal lengths tok/s",
            num=cont["tokens_per_s"],
            den=ideal["tokens_per_s"],
            threshold=0.85,
            num_label="heavy-tailed",
            den_label="equal lengths",
            cpu=(cont, ideal),
        ),
        # the same in steady state: without the drain, where the longest requests end nearly alone
        check(
            "continuous_vs_equal_lengths_steady",
            f"{what}: heavy-tailed / equal lengths tok/s, steady state",
            num=cont["steady_tokens_per_s"],
            den=ideal["steady_tokens_per_s"],
            threshold=0.85,
            num_label="heavy-tailed",
            den_label="equal lengths",
            reference=True,
        ),
    ]
    return runs, targets


def smollm2_runs(plan: WorkloadPlan, device, dtype, log) -> list[dict]:
    """The same comparison on SmolLM2-135M with real GSM8K prompts; lengths from the model's EOS."""
    from kvexp.data import load_problems
    from kvexp.models import ModelSource, encode_prompt, format_prompt

    preset = smollm2_preset(device, dtype)
    loaded = ModelSource(preset).load()
    problems = load_problems("gsm8k", source="bundled", limit=plan.smollm2_problems)
    requests = [
        Request(p.id, encode_prompt(loaded.tokenizer, format_prompt(loaded.tokenizer, preset, p.question)))
        for p in problems
    ]
    runs = []
    for label, continuous in (("SmolLM2 GSM8K, static", False), ("SmolLM2 GSM8K, continuous", True)):
        runs.append(
            {
                "model": "smollm2_135m",
                **run_workload(
                    loaded.model,
                    plan.policy,
                    plan.budget,
                    plan.slack,
                    requests,
                    rows=plan.rows,
                    continuous=continuous,
                    max_new_tokens=plan.smollm2_cap,
                    eos=tuple(loaded.eos_token_ids),
                    label=label,
                ),
            }
        )
        log(_line(runs[-1]))
    return runs


def auto_runs(plan: WorkloadPlan, device, dtype, log) -> tuple[list[dict], list[dict]]:
    """`auto` rows at one memory figure: the full cache at auto_cap new tokens against an evicting
    policy at auto_budget, on the same heavy-tailed workload. On a CPU the figure is chosen so that
    the full cache fits `auto_full_rows` rows; on a GPU it is the device's free memory."""
    model = load_model(plan.heavy_model, device, dtype)
    prompts = random_prompts(model.config.vocab_size, plan.auto_requests, plan.prompt_len, seed=8)
    lengths = heavy_tailed_lengths(plan.auto_requests, plan.auto_cap, seed=1)
    requests = [Request(i, p, seed=i, max_new_tokens=n) for i, (p, n) in enumerate(zip(prompts, lengths))]
    full = build_policy("full")
    memory_gb = None
    if plan.auto_full_rows:
        shape = ModelShape.of(model.config, dtype)
        one = plan_rows(
            shape,
            full,
            row_capacity(full, None, plan.prompt_len, plan.auto_cap),
            plan.prompt_len,
            available_bytes=10**15,
            max_rows=1,
            n_requests=1,
            max_prefill_tokens=8192,
        )
        memory_gb = (weight_bytes(model) + one.shared_bytes + plan.auto_full_rows * one.per_row.total) / GiB
    runs = []
    for name in ("full", plan.policy):
        rows = plan_for_model(
            model,
            bench_policy(name),
            plan.auto_budget,
            [plan.prompt_len] * len(requests),
            max_new_tokens=plan.auto_cap,
            max_rows=plan.auto_max_rows,
            memory_gb=memory_gb,
            max_prefill_tokens=8192,
        )
        label = f"auto, {name}" + ("" if name == "full" else f" B{plan.auto_budget}/S{plan.slack}")
        run = run_workload(
            model,
            name,
            plan.auto_budget,
            plan.slack,
            requests,
            rows=rows.rows,
            continuous=True,
            max_new_tokens=plan.auto_cap,
            label=label,
        )
        runs.append({"model": plan.heavy_model, **run, "memory_gb": memory_gb, "plan": rows.as_dict()})
        log(_line(runs[-1]) + f"  ({rows.rows} rows: {rows.limited_by}, {rows.per_row.total / 2**20:.1f} MiB/row)")
    full_run, evicting = runs
    what = f"{plan.heavy_model} auto at {memory_gb:.2f} GB" if memory_gb else f"{plan.heavy_model} auto"
    targets = [
        check(
            "auto_rows_vs_full",
            f"{what}: {plan.policy} B{plan.auto_budget} rows / full-cache rows (cap {plan.auto_cap})",
            num=evicting["rows"],
            den=full_run["rows"],
            threshold=4.0,
            num_label=plan.policy,
            den_label="full",
        ),
        check(
            "auto_tokens_vs_full",
            f"{what}: {plan.policy} B{plan.auto_budget} tok/s / full-cache tok/s, "
            f"steady state ({plan.auto_requests} requests)",
            num=evicting["steady_tokens_per_s"],
            den=full_run["steady_tokens_per_s"],
            threshold=2.5,
            num_label=plan.policy,
            den_label="full",
        ),
        check(
            "auto_tokens_vs_full_whole",
            f"{what}: {plan.policy} B{plan.auto_budget} tok/s / full-cache tok/s, whole workload with its drain",
            num=evicting["tokens_per_s"],
            den=full_run["tokens_per_s"],
            threshold=2.5,
            num_label=plan.policy,
            den_label="full",
            reference=True,
            cpu=(evicting, full_run),
        ),
    ]
    return runs, targets


def state_table(plan: WorkloadPlan) -> tuple[list[dict], list[dict]]:
    """Per policy, on Llama-3.1-8B's shape in bf16 at B = state_budget (from the config, no weights):
    persistent state bytes per row next to the KV bytes per row, and one eviction's transient bytes."""
    from transformers import LlamaConfig

    shape = ModelShape.of(LlamaConfig(**RANDOM_MODELS["llama8b_shaped"].shape), torch.bfloat16)
    n, rows, targets = plan.state_budget, [], []
    for name in EVICTING:
        policy = build_policy(name)
        per_row, shared = policy.eviction_workspace_bytes(shape.kv_heads, shape.query_heads, n, shape.head_dim)
        cost = row_cost(shape, policy, n)
        kv, state = cost.kv, cost.policy_state
        rows.append(
            {
                "policy": name,
                "budget": n,
                "kv_bytes_per_row": kv,
                "state_bytes_per_row": state,
                "state_over_kv": state / kv,
                "eviction_transient_bytes_per_row": per_row,
                "eviction_transient_bytes_shared": shared,
            }
        )
        targets.append(
            check_at_most("state_vs_kv", f"llama8b B{n}: {name} policy state / KV bytes per row", state / kv, 0.3)
        )
    return rows, targets


# aten operations that launch no kernel: views and aliases of their input
_NO_KERNEL = {"detach", "detach_", "lift_fresh", "alias"}


class _OpCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts aten operations that compute (on a GPU, each is a kernel launch); views are free."""

    def __init__(self):
        super().__init__()
        self.count = 0
        self.by_op = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket.__name__ not in _NO_KERNEL:
            self.count += 1
            self.by_op[func.__name__] += 1
        return func(*args, **(kwargs or {}))


def ops_table(plan: WorkloadPlan, device, dtype) -> tuple[list[dict], list[dict]]:
    """aten operations per decode step, full cache and every policy at (budget, slack) and slack 1,
    one row whose prompt already fills the budget, so every step of an evicting policy is at capacity."""
    model = load_model(plan.model, device, dtype)
    prompt = random_prompts(model.config.vocab_size, 1, plan.ops_prompt, seed=9)[0]
    rows = []
    for name in POLICY_NAMES:
        policy = bench_policy(name)
        for slack in (plan.slack, 1) if policy.evicts else (None,):
            counter, marks = _OpCounter(), []
            budget = Budget.for_policy(policy, plan.budget, slack)
            engine = Engine(
                model,
                policy,
                budget,
                GenerationSettings(max_new_tokens=plan.ops_steps + 1),
                observer=lambda cache, keys: marks.append(counter.count),  # noqa: B023 - runs in this iteration
            )
            with counter:
                list(engine.generate([Request(0, prompt)]))
            rows.append(
                {
                    "policy": name,
                    "budget": budget.tokens,
                    "slack": slack,
                    "ops_per_step": (marks[-1] - marks[0]) / (len(marks) - 1),
                }
            )
    full = rows[0]["ops_per_step"]
    targets = []
    for r in rows[1:]:
        r["ops_vs_full"] = r["ops_per_step"] / full
        targets.append(
            check_at_most(
                "ops_vs_full",
                f"{plan.model} B{r['budget']}/S{r['slack']}: {r['policy']} aten ops per decode step / full",
                r["ops_vs_full"],
                1.5,
                reference=r["slack"] != plan.slack,
            )
        )
    return rows, targets


def _line(run: dict) -> str:
    return (
        f"   {run['run']:<28} {run['rows']:>4} rows  {run['tokens']:>7} tokens  {run['wall_s']:8.2f} s  "
        f"{run['tokens_per_s']:9.1f} tok/s  utilization {run['utilization']:.2f}"
    )
