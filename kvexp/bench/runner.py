"""One timed decode: kvexp's Engine (any policy) or transformers' own `generate` on the full cache.

Both are timed per decode step, decode only (prefill is reported apart):
- kvexp: the engine's `observer` hook fires after every forward pass; its timestamps delimit steps
  (prefill forward -> 1st decode forward -> ...), each step being one sample + one forward.
- transformers: a StoppingCriteria that never stops records a timestamp after every token (prefill
  forward + argmax -> decode forward + argmax -> ...), again one forward + one sample per step. On
  CUDA, where a per-step synchronisation would cost `generate` its deferred stop checks, decode time
  is instead (whole `generate`) - (a prefill-only forward timed on its own), and no per-step times
  are kept.
EOS is disabled (fixed-length decode), decoding is greedy, the prompts are random token ids.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch

from kvexp.engine.memory import ModelShape

KVEXP, HF = "kvexp", "hf_generate"


def bench_policy(name: str):
    """A policy as the bench runs it: with its prompt unpinned, since the bench's prompts fill the
    budget so that every step evicts (a pinned prompt would not fit); what a step costs does not
    depend on which tokens are pinned."""
    from kvexp.policies import build_policy

    return build_policy(name, protect_prompt=False)


@dataclass(frozen=True)
class RunSpec:
    model: str
    engine: str  # kvexp | hf_generate
    policy: str  # full for hf_generate
    budget: int | None  # None for full
    slack: int | None  # None for full
    new_tokens: int
    batch: int

    def label(self) -> str:
        b = "-" if self.budget is None else f"B{self.budget}/S{self.slack}"
        return f"{self.model} {self.engine} {self.policy} {b} n={self.new_tokens} bs={self.batch}"


@dataclass
class Timing:
    step_s: list[float]  # one duration per decode step (empty when not measured per step)
    decode_s: float
    cpu_s: float | None  # process CPU time (all threads) over the decode; None when not measured
    steps: int
    prefill_s: float
    peak_resident_tokens: int
    kv_bytes_peak: int  # per sequence, at its peak residency
    kv_bytes_allocated: int  # what the cache really holds in memory for the whole batch at its peak


class _Clock:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.stamps: list[float] = []
        self.cpu: list[float] = []

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def stamp(self, *_args, **_kw) -> None:
        self.stamps.append(self.now())
        self.cpu.append(time.process_time())


def run_kvexp(model, spec: RunSpec, prompts: list[list[int]]) -> Timing:
    from kvexp.engine import Budget, Engine, GenerationSettings, Request

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    policy = bench_policy(spec.policy)
    budget = Budget.for_policy(policy, spec.budget, spec.slack or 1)
    settings = GenerationSettings(max_new_tokens=spec.new_tokens, batch_size=spec.batch, eos_token_ids=())
    clock = _Clock(device)
    engine = Engine(model, policy, budget, settings, observer=clock.stamp)
    requests = [Request(i, p, seed=i) for i, p in enumerate(prompts)]
    t0 = clock.now()
    outputs = list(engine.generate(requests))
    errors = [o.error for o in outputs if o.error]
    if errors:
        raise RuntimeError(f"{spec.label()}: the engine reported an error:\n{errors[0]}")
    if len(clock.stamps) != spec.new_tokens:  # prefill + (new_tokens - 1) decode forwards, one batch
        raise RuntimeError(
            f"{spec.label()}: expected {spec.new_tokens} forward passes, saw {len(clock.stamps)}"
            " (did the batch fall back to row-by-row after an error?)"
        )
    steps = [b - a for a, b in zip(clock.stamps, clock.stamps[1:])]
    per_token = ModelShape.of(model.config, dtype).kv_bytes_per_token
    longest = max(len(p) for p in prompts)
    capacity = longest + spec.new_tokens if not policy.evicts else min(longest + spec.new_tokens, spec.budget)
    return Timing(
        step_s=steps,
        decode_s=clock.stamps[-1] - clock.stamps[0],
        cpu_s=clock.cpu[-1] - clock.cpu[0],
        steps=len(steps),
        prefill_s=clock.stamps[0] - t0,
        peak_resident_tokens=max(o.peak_resident_tokens for o in outputs),
        kv_bytes_peak=max(o.kv_bytes_peak for o in outputs),
        kv_bytes_allocated=capacity * per_token * len(prompts),
    )


def run_hf(model, spec: RunSpec, prompts: list[list[int]]) -> Timing:
    from transformers import DynamicCache, GenerationConfig, StoppingCriteria, StoppingCriteriaList

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    clock = _Clock(device)
    on_cuda = device.type == "cuda"

    class Stamp(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            if not on_cuda:
                clock.stamp()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    ids = torch.tensor(prompts, device=device)
    mask = torch.ones_like(ids)
    config = GenerationConfig(
        max_new_tokens=spec.new_tokens,
        min_new_tokens=0,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
        bos_token_id=None,
        use_cache=True,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    with torch.inference_mode():
        prefill_only = None
        if on_cuda:
            t = clock.now()
            model(input_ids=ids, attention_mask=mask, past_key_values=DynamicCache(config=model.config), use_cache=True)
            prefill_only = clock.now() - t
        t0 = clock.now()
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            generation_config=config,
            past_key_values=DynamicCache(config=model.config),
            stopping_criteria=StoppingCriteriaList([Stamp()]),
        )
        t_end = clock.now()
    produced = out.shape[1] - ids.shape[1]
    if produced != spec.new_tokens:
        raise RuntimeError(f"{spec.label()}: generate produced {produced} tokens, expected {spec.new_tokens}")
    if on_cuda:
        steps, decode_s, prefill_s, cpu_s = [], (t_end - t0) - prefill_only, prefill_only, None
    else:
        steps = [b - a for a, b in zip(clock.stamps, clock.stamps[1:])]
        decode_s, prefill_s = clock.stamps[-1] - clock.stamps[0], clock.stamps[0] - t0
        cpu_s = clock.cpu[-1] - clock.cpu[0]
    resident = ids.shape[1] + spec.new_tokens - 1  # the last sampled token is never appended
    per_token = ModelShape.of(model.config, dtype).kv_bytes_per_token
    return Timing(
        step_s=steps,
        decode_s=decode_s,
        cpu_s=cpu_s,
        steps=spec.new_tokens - 1,
        prefill_s=prefill_s,
        peak_resident_tokens=resident,
        kv_bytes_peak=resident * per_token,
        kv_bytes_allocated=resident * per_token * len(prompts),
    )


def run(model, spec: RunSpec, prompts: list[list[int]]) -> Timing:
    return (run_hf if spec.engine == HF else run_kvexp)(model, spec, prompts)


# ---- statistics ----
def robust_step_s(step_s: list[float], block: int) -> float | None:
    """Median over consecutive blocks of `block` steps of each block's mean step time.

    Block means keep periodic costs (an eviction every `slack` steps, when `block` is a multiple of
    the slack) while the median drops blocks that other processes on a shared machine slowed down;
    for a step time that grows linearly (a full cache), it equals the mean."""
    if not step_s:
        return None
    n = len(step_s) // block
    if n == 0:
        return statistics.fmean(step_s)
    return statistics.median(statistics.fmean(step_s[i * block : (i + 1) * block]) for i in range(n))


def summarize(spec: RunSpec, timings: list[Timing], block: int, prompt_len: int, early_budget: int | None) -> dict:
    """One bench.json row from the repetitions of one spec. Each figure is the median over repetitions.

    early_*: for the full cache, the decode speed over the first steps, while it holds no more than
    `early_budget` tokens per sequence (the speed an eviction policy at that budget could reach)."""

    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    tps = [spec.batch * t.steps / t.decode_s for t in timings]
    robust = [robust_step_s(t.step_s, block) for t in timings]
    robust_tps = [spec.batch / r if r else None for r in robust]
    row = {
        **asdict(spec),
        "prompt_len": prompt_len,
        "decode_tokens_per_s": med(tps),
        "ms_per_step": med(1000 * t.decode_s / t.steps for t in timings),
        "decode_tokens_per_s_robust": med(robust_tps),
        "ms_per_step_robust": med(1000 * r if r else None for r in robust),
        "prefill_s": med(t.prefill_s for t in timings),
        "cpu_ms_per_step": med(1000 * t.cpu_s / t.steps if t.cpu_s is not None else None for t in timings),
        "decode_s": med(t.decode_s for t in timings),
        "steps": timings[0].steps,
        "peak_resident_tokens": timings[0].peak_resident_tokens,
        "kv_bytes_peak": timings[0].kv_bytes_peak,
        "kv_bytes_allocated": timings[0].kv_bytes_allocated,
        "reps": len(timings),
        "reps_decode_tokens_per_s": [round(x, 3) for x in tps],
        "early_steps": None,
        "early_decode_tokens_per_s": None,
    }
    if spec.budget is None and early_budget is not None and timings[0].step_s:
        # decode step k attends over prompt_len + k tokens (the new one included)
        early = early_budget - prompt_len
        if 0 < early <= timings[0].steps:
            row["early_steps"] = early
            row["early_decode_tokens_per_s"] = med(spec.batch / robust_step_s(t.step_s[:early], block) for t in timings)
    return row
