"""Batch sizing from memory (kvexp.engine.memory) with the real configs of the 8B models, no weights:
bytes per token and per row, policy state against the KV it manages, the row count a memory figure
gives; and `generation.batch_size=auto` end to end on the tiny model."""

from __future__ import annotations

import json

import pytest
import torch
from test_pipeline import run
from transformers import LlamaConfig, Qwen2Config

from kvexp.bench.models import RANDOM_MODELS
from kvexp.engine import ConfigError
from kvexp.engine.cache import PREFILL_CHUNK_BYTES
from kvexp.engine.memory import GiB, ModelShape, plan_rows, row_capacity, row_cost
from kvexp.pipeline import read_jsonl
from kvexp.policies import POLICY_NAMES, build_policy

LLAMA_8B = ModelShape.of(LlamaConfig(**RANDOM_MODELS["llama8b_shaped"].shape), torch.bfloat16)
# DeepSeek-R1-Distill-Qwen-7B's config: 28 layers, 28 query / 4 KV heads of 128, vocab 152064
QWEN_7B = ModelShape.of(
    Qwen2Config(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
    ),
    torch.bfloat16,
)
EVICTING = [p for p in POLICY_NAMES if p != "full"]


def test_shapes_come_from_the_config():
    assert LLAMA_8B.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 128 * 1024
    assert QWEN_7B.kv_bytes_per_token == 2 * 28 * 4 * 128 * 2
    assert abs(LLAMA_8B.weight_bytes() / 2 - 8.03e9) / 8.03e9 < 0.01  # Llama-3.1-8B: 8.03B parameters
    assert abs(QWEN_7B.weight_bytes() / 2 - 7.62e9) / 7.62e9 < 0.01  # Qwen2.5-7B: 7.62B parameters


@pytest.mark.parametrize("name", EVICTING)
@pytest.mark.parametrize("shape", [LLAMA_8B, QWEN_7B], ids=["llama8b", "qwen7b"])
def test_policy_state_is_a_small_fraction_of_the_kv_it_manages(name, shape):
    capacity = 640  # R-KV's schedule b=512 with its 128-step buffer
    cost = row_cost(shape, build_policy(name), capacity)
    assert cost.kv == capacity * shape.kv_bytes_per_token
    assert cost.policy_state <= 0.3 * cost.kv, (name, cost.policy_state / cost.kv)


def test_rkv_keeps_no_pairwise_state():
    # before: an fp32 [N, N] similarity matrix per (layer, KV head), ~420 MB per row at N = 640
    policy = build_policy("rkv")
    assert policy.state_bytes(8, 640) == 8 * 8 * 640 * 4  # its 8-query window only
    assert policy.state_bytes(8, 4096) == 8 * 8 * 4096 * 4  # grows linearly
    per_row, shared = policy.eviction_workspace_bytes(8, 32, 640, 128)
    one_layer_kv = 640 * LLAMA_8B.kv_bytes_per_token // LLAMA_8B.layers
    assert shared <= 32 * 2**20 and per_row < 1.2 * one_layer_kv  # mostly an fp32 copy of one layer's keys


def test_row_count_is_what_the_formula_says():
    # StreamingLLM at B=640 decodes through the fused kernel: written out by hand here
    h, hq, d, hidden, inter, vocab = 8, 32, 128, 4096, 14336, 128256
    kv = 640 * 2 * 32 * h * d * 2
    attention, eviction = hq * 640 * 4 + h * 640, h * 640 * (4 + 24 + 2)
    workspace = max(attention, eviction) + vocab * (2 + 16) + (4 * hidden + 3 * inter + 2 * (hq + 2 * h) * d) * 2
    shared = 8192 * (4 * hidden + 3 * inter + 2 * (hq + 2 * h) * d) * 2 + 3 * PREFILL_CHUNK_BYTES
    available = 80 * GiB - LLAMA_8B.weight_bytes()
    plan = plan_rows(
        LLAMA_8B,
        build_policy("streaming_llm"),
        640,
        200,
        available_bytes=available,
        max_rows=10**6,
        n_requests=10**6,
        max_prefill_tokens=8192,
    )
    assert plan.per_row.total == kv + workspace and plan.shared_bytes == shared
    assert plan.rows == (available - shared) // (kv + workspace) and plan.limited_by == "memory"
    assert 500 < plan.rows < 800  # R-KV's paper: batch 402 at b=512 on an 80 GB GPU (with its own overheads)


def test_an_evicting_policy_fits_many_more_rows_than_the_full_cache():
    available = 80 * GiB - LLAMA_8B.weight_bytes()
    common = dict(available_bytes=available, max_rows=10**6, n_requests=10**6, max_prefill_tokens=8192)
    full = build_policy("full")
    full_plan = plan_rows(LLAMA_8B, full, row_capacity(full, None, 200, 16384), 200, **common)
    for name in EVICTING:
        policy = build_policy(name)
        plan = plan_rows(LLAMA_8B, policy, row_capacity(policy, 640, 200, 16384), 200, **common)
        assert plan.rows >= 15 * full_plan.rows, (name, plan.rows, full_plan.rows)


def test_rows_are_capped_and_a_plan_that_fits_nothing_is_refused():
    policy = build_policy("h2o")
    common = dict(available_bytes=80 * GiB, max_prefill_tokens=8192)
    assert plan_rows(LLAMA_8B, policy, 640, 200, max_rows=64, n_requests=1000, **common).limited_by == "max_batch_size"
    few = plan_rows(LLAMA_8B, policy, 640, 200, max_rows=64, n_requests=5, **common)
    assert (few.rows, few.limited_by) == (5, "requests")
    with pytest.raises(ConfigError, match="not even one row fits.*generation.memory_gb"):
        plan_rows(
            LLAMA_8B,
            build_policy("full"),
            200 + 16384,
            200,
            available_bytes=1 * GiB,
            max_rows=64,
            n_requests=5,
            max_prefill_tokens=8192,
        )


def test_auto_rows_run_matches_a_fixed_batch_and_is_recorded(tmp_path):
    common = ["dataset.limit=5", "generation.max_new_tokens=12", "policy=h2o", "budget=16", "policy.window=4"]
    run(tmp_path / "fixed", *common, "generation.batch_size=1")
    run(tmp_path / "auto", *common, "generation.batch_size=auto")
    run(tmp_path / "small", *common, "generation.batch_size=auto", "generation.max_batch_size=2")
    by_key = {
        name: {(r["id"], r["sample_idx"]): r for r in read_jsonl(tmp_path / name / "samples.jsonl")}
        for name in ("fixed", "auto", "small")
    }
    timing = {"prefill_s", "decode_s"}
    for name in ("auto", "small"):
        assert by_key[name].keys() == by_key["fixed"].keys()
        for key, row in by_key["fixed"].items():
            assert {k: v for k, v in by_key[name][key].items() if k not in timing} == {
                k: v for k, v in row.items() if k not in timing
            }
    auto = json.loads((tmp_path / "auto" / "run_meta.json").read_text())["batch"]
    assert (auto["rows"], auto["limited_by"]) == (5, "requests") and auto["bytes_per_row"] > 0
    assert auto["capacity"] == 16
    small = json.loads((tmp_path / "small" / "run_meta.json").read_text())["batch"]
    assert (small["rows"], small["limited_by"]) == (2, "max_batch_size")
    fixed = json.loads((tmp_path / "fixed" / "run_meta.json").read_text())["batch"]
    assert (fixed["rows"], fixed["limited_by"]) == (1, "generation.batch_size")
    assert fixed["bytes_per_row"] == auto["bytes_per_row"]


def _peak_allocated_bytes(fn) -> int:
    """The most bytes `fn` holds at once on the CPU beyond what existed before it, from the profiler's
    allocation and free events in time order."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return peak


@pytest.mark.parametrize("slack", [1, 16])
@pytest.mark.parametrize("name", [p for p in POLICY_NAMES if build_policy(p).evicts])
def test_declared_eviction_workspace_matches_what_one_eviction_allocates(name, slack):
    """A policy's `eviction_workspace_bytes` sizes batches: one real eviction (score, protection, selection,
    state clearing) of 4 rows x 2 KV heads (2 query heads each) x 512 slots must allocate between 0.4 and
    1.25 times what it declares, so batches neither run out of memory nor waste it."""
    from kvexp.engine import Budget
    from kvexp.engine.cache import LayerCache
    from kvexp.policies.base import StepContext
    from kvexp.policies.triattention_stats import QueryStats

    rows, heads, group, n, d = 4, 2, 2, 512, 32
    g = torch.Generator().manual_seed(0)
    policy = build_policy(name)
    layer = LayerCache(rows, heads, n, d, torch.float32, "cpu", policy, Budget(n, slack), 0)
    layer.k.copy_(torch.randn(layer.k.shape, generator=g))
    layer.pos.copy_(
        torch.stack([torch.stack([torch.randperm(n, generator=g) for _ in range(heads)]) for _ in range(rows)])
    )
    if hasattr(policy, "use_stats"):  # TriAttention: random calibrated statistics of one layer
        q = torch.complex(*(torch.randn(1, heads * group, d // 2, generator=g) for _ in range(2)))
        policy.use_stats(QueryStats(q, q.abs() + 1, 1.0 / 10000 ** (torch.arange(0, d, 2).float() / d)))
    incoming = torch.full((rows,), n)
    ctx = StepContext(
        prefill=False,
        incoming=incoming,
        query_pos=incoming.view(-1, 1),
        prompt_len=torch.full((rows,), 10),
        row_seed=torch.arange(rows),
        evict_rows=torch.ones(rows, dtype=torch.bool),
        evict_all=True,
        evict_count=slack,
        budget=n,
        slack=slack,
    )
    if policy.needs_attention:
        for _ in range(40):
            policy.observe(layer.state, torch.rand(rows, heads, 1, n, generator=g).softmax(-1), ctx)
    measured = _peak_allocated_bytes(lambda: layer.evict(ctx))
    per_row, shared = policy.eviction_workspace_bytes(heads, heads * group, n, d)
    declared = rows * per_row + shared
    assert 0.4 * declared <= measured <= 1.25 * declared, (measured, declared)
