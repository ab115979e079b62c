"""The engine's promises (README, "How the engine works"): equivalences, per-step reference, invariants, batching."""

from __future__ import annotations

import inspect

import pytest
import torch
from engine_models import ARCHITECTURES, prompt, tiny_model
from reference import RULES, ReferencePolicy, reference_generate

from kvexp.engine import Budget, ConfigError, Engine, GenerationSettings, Request, check_model_config
from kvexp.engine.budget import SCHEDULES
from kvexp.policies import POLICIES, POLICY_NAMES, build_policy, evicting_policies

EVICTING = list(evicting_policies())


def small_windows(name: str, budget: int = 16, window: int = 4) -> dict:
    """Parameters that shrink what a policy protects to `window` recent tokens, so that at the tests'
    budgets its score, not its protection, picks what is evicted: a policy that scores by a window of
    recent queries protects that window (obs_window); any other whose default window is larger gets
    `window`; one that pins the prompt by default does not here (the tests' prompts outgrow their
    budgets; pinning has its own cases). Read from the policy itself, so a new policy is covered by
    adding its file."""
    default = build_policy(name)
    params = {"protect_prompt": False} if default.protect_prompt else {}
    if "obs_window" in inspect.signature(POLICIES[name]).parameters:
        return {**params, "obs_window": window}
    if default.recent_window(budget) > window:
        return {**params, "window": window}
    return params


SMALL_WINDOWS = {name: small_windows(name) for name in POLICY_NAMES}


def run(model, policy, budget, requests, max_new=30, observer=None, **settings):
    engine = Engine(model, policy, budget, GenerationSettings(max_new_tokens=max_new, **settings), observer=observer)
    return {o.key: o for o in engine.generate(requests)}


def hf_greedy(model, ids, max_new):
    out = model.generate(
        torch.tensor([ids]), max_new_tokens=max_new, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    return out[0, len(ids) :].tolist()


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_full_equals_transformers_generate(arch):
    model = tiny_model(arch)
    ids = prompt(23, seed=1)
    out = run(model, build_policy("full"), Budget(None), [Request("a", ids)], max_new=40)["a"]
    assert out.error is None
    assert out.output_ids == hf_greedy(model, ids, 40)
    assert out.stop_reason == "max_new_tokens" and out.n_evicted_tokens == 0
    assert out.peak_resident_tokens == 23 + 39  # the last sampled token is never appended


@pytest.mark.parametrize("name", EVICTING)
def test_budget_above_prompt_plus_output_equals_full(llama, name):
    ids = prompt(20, seed=2)
    full = run(llama, build_policy("full"), Budget(None), [Request(0, ids)])[0]
    out = run(llama, build_policy(name), Budget(96, 1), [Request(0, ids, seed=9)])[0]  # over any default window
    assert out.output_ids == full.output_ids
    assert out.n_evicted_tokens == 0


def _final_positions(store):
    def observer(cache, keys):
        store["pos"] = [
            [sorted(p for p in layer.pos[0, h].tolist() if p >= 0) for h in range(layer.pos.shape[1])]
            for layer in cache.layers
        ]

    return observer


@pytest.mark.parametrize("name", EVICTING)
def test_every_policy_has_a_reference_rule(name):
    """The one shared test that asks more of a new policy than its module, YAML and registry line: an
    independent transcription of its rule in tests/reference.py (the error names the policy and where)."""
    ReferencePolicy(name, 16, 1)


# policies whose rule the reference holds (the others fail the test above, once each)
REFERENCED = [name for name in EVICTING if name in RULES]
# prompts of 9 and 22 tokens: shorter and longer than the budget of 16 (compressed at prefill)
REFERENCE_CASES = [(name, {}, n) for name in REFERENCED for n in (9, 22)] + [
    ("h2o", {"normalize": "mean"}, 22),
    ("h2o", {"protect_prompt": True, "window": 2}, 9),
    ("streaming_llm", {"n_sink": 2, "window": 3}, 22),
    ("knorm", {"window": 3}, 22),
    ("keydiff", {"window": 3}, 22),
    ("random", {"window": 2}, 22),
    ("h2o", {"group_agg": "max"}, 22),
    ("snapkv", {"group_agg": "sum", "pool": "max", "kernel": 3}, 22),
    ("triattention", {"protect_prompt": True}, 9),
    ("triattention", {"group_agg": "mean", "n_sink": 2}, 22),
    ("random_attention", {"protect_prompt": True}, 9),
    ("vase", {"protect_prompt": True}, 9),
    ("vase", {"large_share": 0.5, "n_sink": 0, "group_agg": "max"}, 22),
]


@pytest.mark.parametrize(
    "name,params,prompt_len",
    REFERENCE_CASES,
    ids=[f"{n}-{'-'.join(f'{k}={x}' for k, x in p.items()) or 'default'}-prompt{m}" for n, p, m in REFERENCE_CASES],
)
def test_slack_one_matches_per_step_reference(llama, name, params, prompt_len):
    out = _matches_reference(llama, name, {**SMALL_WINDOWS[name], **params}, prompt_len, Budget(16, 1))
    assert out.n_evicted_tokens == prompt_len + 31 - 16


def _matches_reference(llama, name, params, prompt_len, budget):
    """The engine's tokens and final resident positions equal the per-step reference's for one prompt
    (32 new tokens); returns the engine's output."""
    ids = prompt(prompt_len, seed=3)
    reference = ReferencePolicy(name, budget.tokens, budget.slack, seed=11, schedule=budget.schedule, **params)
    ref_tokens, ref_pos = reference_generate(llama, ids, reference, 32)
    store = {}
    out = run(llama, build_policy(name, **params), budget, [Request(0, ids, seed=11)], 32, _final_positions(store))[0]
    assert out.output_ids == ref_tokens
    assert store["pos"] == ref_pos
    return out


@pytest.mark.parametrize("name,prompt_len", [(name, n) for name in REFERENCED for n in (9, 22)])
def test_interval_schedule_matches_per_step_reference(llama, name, prompt_len):
    """budget.schedule=interval at slack 4: cuts to B - S after every 4th decode step (a prompt of 22 is
    compressed to B - S = 12 at prefill, one of 9 is not), in the reference's plain loops too."""
    out = _matches_reference(llama, name, SMALL_WINDOWS[name], prompt_len, Budget(16, 4, "interval"))
    assert out.peak_resident_tokens == 16


@pytest.mark.parametrize("name", EVICTING)
def test_schedules_agree_at_slack_one_for_a_prompt_under_the_budget(llama, name):
    """README: with S = 1 the two schedules differ only for a prompt longer than B."""
    params = SMALL_WINDOWS[name]
    request = [Request(0, prompt(9, seed=3), seed=11)]
    cap, interval = (run(llama, build_policy(name, **params), Budget(16, 1, s), request)[0] for s in SCHEDULES)
    assert cap.output_ids == interval.output_ids and cap.n_evicted_tokens == interval.n_evicted_tokens > 0


def decoding_press_sizes(prompt_len, target, interval, steps):
    """Entries each decode step's attention sees under kvpress's DecodingPress (decoding_press.py,
    forward_hook): every decode forward appends its token and counts one step; once the count reaches
    `compression_interval` the cache is compressed to `target_size` (nothing if already below) after that
    step's attention, and the count restarts. The prompt is never compressed."""
    size, count, seen = prompt_len, 0, []
    for _ in range(steps):
        size += 1
        seen.append(size)
        count += 1
        if count >= interval:
            size, count = min(size, target), 0
    return seen


def _resident_per_step(llama, prompt_len, budget, steps=40):
    sizes = []

    def observer(cache, keys):
        if not cache.ctx.prefill:
            sizes.append(int((cache.layers[0].pos[0, 0] >= 0).sum()))

    run(llama, build_policy("streaming_llm"), budget, [Request(0, prompt(prompt_len, seed=1))], steps + 1, observer)
    return sizes


@pytest.mark.parametrize("prompt_len", range(2, 21))
def test_interval_schedule_keeps_its_phase_whatever_the_prompt(llama, prompt_len):
    b, s = 16, 5
    sizes = _resident_per_step(llama, prompt_len, Budget(b, s, "interval"))
    cuts = [t for t in range(2, len(sizes) + 1) if sizes[t - 1] <= sizes[t - 2]]  # step t appended after a cut
    assert cuts and all((t - 1) % s == 0 for t in cuts)
    assert max(sizes) <= b
    # DecodingPress(target_size=B - S, compression_interval=S) step for step; a prompt longer than its target
    # is compressed to it at prefill here (B stays a hard cap), where DecodingPress would run over B until step S
    assert sizes == decoding_press_sizes(min(prompt_len, b - s), b - s, s, len(sizes))
    if prompt_len <= b - s:
        assert sizes == decoding_press_sizes(prompt_len, b - s, s, len(sizes))
    else:
        assert max(decoding_press_sizes(prompt_len, b - s, s, len(sizes))) > b


def test_interval_and_cap_schedules_on_a_hand_worked_case(llama):
    """A prompt of 14, target b = 20, S = 12 (B = 32): the authors' schedule cuts after decode steps 12, 24
    and 36, at sequence lengths 26, 38, 50; kvexp's cap evicts when the 33rd entry would arrive, at
    sequence lengths 32 and 44 (with every entry appended, the sequence length is the prompt plus the
    tokens appended)."""

    def cut_lengths(schedule):
        sizes = _resident_per_step(llama, 14, Budget(32, 12, schedule), steps=40)
        return [14 + t - 1 for t in range(2, len(sizes) + 1) if sizes[t - 1] <= sizes[t - 2]]

    assert cut_lengths("interval") == [26, 38, 50]
    assert cut_lengths("cap") == [32, 44]
    assert decoding_press_sizes(14, 20, 12, 40) == _resident_per_step(llama, 14, Budget(32, 12, "interval"))


def test_policies_really_differ(llama):
    """Guards the reference test: the policies must make different choices on this model."""
    ids = prompt(22, seed=3)
    finals = {}
    for name in EVICTING:
        store = {}
        run(
            llama,
            build_policy(name, **SMALL_WINDOWS[name]),
            Budget(16, 1),
            [Request(0, ids, seed=1)],
            observer=_final_positions(store),
        )
        finals[name] = str(store["pos"])
    assert len(set(finals.values())) == len(finals)


@pytest.mark.parametrize("name", EVICTING)
@pytest.mark.parametrize("slack", [1, 5])
def test_invariants_every_step(llama, name, slack):
    budget = 16
    policy = build_policy(name, **SMALL_WINDOWS[name])
    window = policy.recent_window(budget)
    ids = [prompt(30, seed=4), prompt(7, seed=5)]
    checked = {"steps": 0}

    def observer(cache, keys):
        ctx = cache.ctx
        for layer in cache.layers:
            pos = layer.pos
            for b in range(pos.shape[0]):
                incoming = int(ctx.incoming[b])
                for h in range(pos.shape[1]):
                    held = [p for p in pos[b, h].tolist() if p >= 0]
                    assert len(held) <= budget
                    assert len(set(held)) == len(held)
                    assert incoming in held or ctx.prefill
                    if not ctx.prefill and incoming >= budget:
                        assert len(held) >= budget - slack + 1
                        must_keep = set(range(policy.n_sink)) | set(range(incoming - window, incoming + 1))
                        assert must_keep <= set(held)
        checked["steps"] += 1

    outs = run(
        llama,
        policy,
        Budget(budget, slack),
        [Request(i, x, seed=i) for i, x in enumerate(ids)],
        max_new=40,
        observer=observer,
    )
    assert checked["steps"] == 40
    for o in outs.values():
        assert o.peak_resident_tokens <= budget and o.n_evicted_tokens > 0


def test_streaming_llm_keeps_its_sinks_after_hundreds_of_evictions(llama):
    ids = prompt(12, seed=6)
    store = {}
    out = run(
        llama,
        build_policy("streaming_llm"),
        Budget(16, 1),
        [Request(0, ids)],
        max_new=400,
        observer=_final_positions(store),
    )[0]
    assert out.n_evicted_tokens >= 390
    for layer in store["pos"]:
        for held in layer:
            assert held[:4] == [0, 1, 2, 3]
            assert held[4:] == list(range(12 + 399 - 12, 12 + 399))  # the last appended is position 410


@pytest.mark.parametrize("name", EVICTING)
def test_permuting_storage_slots_changes_no_output(llama, name):
    ids = prompt(25, seed=7)
    policy = build_policy(name, **SMALL_WINDOWS[name])
    base = run(llama, policy, Budget(16, 2), [Request(0, ids, seed=3)])[0]
    gen = torch.Generator().manual_seed(0)

    def permute(cache, keys):
        for layer in cache.layers:
            perm = torch.randperm(layer.capacity, generator=gen)
            layer.k, layer.v, layer.pos = layer.k[:, :, perm], layer.v[:, :, perm], layer.pos[:, :, perm]
            for key, t in layer.state.tensors.items():  # every state tensor has the slot axis last
                layer.state.tensors[key] = t[..., perm]

    permuted = run(llama, policy, Budget(16, 2), [Request(0, ids, seed=3)], observer=permute)[0]
    assert permuted.output_ids == base.output_ids


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_batch_equals_each_prompt_alone(llama, name):
    prompts = [prompt(n, seed=10 + n) for n in (5, 19, 11, 27)]
    policy = build_policy(name, **SMALL_WINDOWS[name])
    budget = 16 if policy.evicts else None
    requests = [Request(i, p, seed=100 + i) for i, p in enumerate(prompts)]
    batched = run(llama, policy, Budget(budget), requests, batch_size=4)
    for req in requests:
        alone = run(llama, policy, Budget(budget), [req])[req.key]
        assert batched[req.key].output_ids == alone.output_ids
        assert batched[req.key].n_evicted_tokens == alone.n_evicted_tokens


def test_sampling_is_seeded_per_request_not_per_batch(llama):
    prompts = [prompt(n, seed=n) for n in (6, 14, 9)]
    policy = build_policy("h2o", window=4)
    sampling = dict(temperature=0.9, top_p=0.95, top_k=50)
    requests = [Request(i, p, seed=1000 + i) for i, p in enumerate(prompts)]
    batched = run(llama, policy, Budget(16), requests, batch_size=3, **sampling)
    reversed_order = run(llama, policy, Budget(16), requests[::-1], batch_size=2, **sampling)
    for req in requests:
        assert batched[req.key].output_ids == reversed_order[req.key].output_ids
    greedy = run(llama, policy, Budget(16), requests[:1])[0]
    other_seed = run(llama, policy, Budget(16), [Request(0, prompts[0], seed=7)], **sampling)[0]
    assert batched[0].output_ids != greedy.output_ids or batched[0].output_ids != other_seed.output_ids


def test_finished_rows_leave_the_batch(llama):
    ids = [prompt(8, seed=20), prompt(8, seed=21)]
    first = run(llama, build_policy("full"), Budget(None), [Request(0, ids[0])], max_new=5)[0].output_ids
    sizes = []
    outs = run(
        llama,
        build_policy("full"),
        Budget(None),
        [Request(i, x) for i, x in enumerate(ids)],
        max_new=20,
        eos_token_ids=[first[2]],
        observer=lambda cache, keys: sizes.append(len(keys)),
        batch_size=2,
    )
    assert outs[0].stop_reason == "eos" and outs[0].output_ids == first[:3]
    assert sizes[0] == 2 and sizes[-1] == 1 and outs[1].stop_reason in ("eos", "max_new_tokens")
    assert outs[0].n_output_tokens == 3


def test_repetition_stop(llama):
    from kvexp.engine import RepetitionStop

    rule = RepetitionStop(max_period=4, min_repeats=3, min_span=6)
    assert rule.triggered([5, 1, 2, 1, 2, 1, 2])
    assert not rule.triggered([5, 1, 2, 1, 2, 1, 3])
    assert rule.triggered([9] * 6) and not rule.triggered([9] * 5)


def test_pinned_prompt_that_does_not_fit_is_an_error_row(llama):
    policy = build_policy("h2o", protect_prompt=True, window=2)
    outs = run(llama, policy, Budget(16), [Request("long", prompt(20)), Request("short", prompt(6))])
    assert "prompt does not fit" in outs["long"].error and "budget 16" in outs["long"].error
    assert outs["short"].error is None and len(outs["short"].output_ids) == 30


def test_no_token_is_decoded_past_the_models_positions(llama, monkeypatch):
    """Per row: a row stops when prompt + output fill max_position_embeddings (stop_reason max_positions),
    every position fed stays below it, a prompt with no room left is an error row, and the other rows of
    the batch are untouched."""
    monkeypatch.setattr(llama.config, "max_position_embeddings", 40)
    fed = []

    def positions(cache, keys):
        if not cache.ctx.prefill:
            fed.append(int(cache.ctx.incoming.max()))

    requests = [Request("a", prompt(30)), Request("b", prompt(12, seed=1)), Request("c", prompt(40, seed=2))]
    outs = run(llama, build_policy("full"), Budget(None), requests, max_new=50, observer=positions, batch_size=2)
    assert outs["a"].stop_reason == "max_positions" and len(outs["a"].output_ids) == 10
    assert outs["b"].stop_reason == "max_positions" and len(outs["b"].output_ids) == 28
    assert "max_position_embeddings=40" in outs["c"].error
    # the last output token would sit at position 39 and is never fed: the highest position decoded is 38
    assert max(fed) == 38
    short = run(llama, build_policy("full"), Budget(None), [Request("b", prompt(12, seed=1))], max_new=20)["b"]
    assert short.stop_reason == "max_new_tokens" and short.output_ids == outs["b"].output_ids[:20]


def test_prompt_kept_at_the_end_by_hand(llama):
    """StreamingLLM keeps its 4 sinks of a 10-token prompt and then only recent tokens: 4/10 of the
    prompt in every head of every layer. The full cache keeps all of it."""
    ids = prompt(10, seed=30)
    out = run(llama, build_policy("streaming_llm"), Budget(16, 1), [Request(0, ids)], max_new=30)[0]
    assert (out.prompt_kept_share, out.prompt_kept_any) == (0.4, 0.4)
    full = run(llama, build_policy("full"), Budget(None), [Request(0, ids)], max_new=30)[0]
    assert (full.prompt_kept_share, full.prompt_kept_any) == (1.0, 1.0)
    pinned = run(llama, build_policy("h2o", protect_prompt=True, window=2), Budget(16), [Request(0, prompt(20))])[0]
    assert pinned.error is not None and pinned.prompt_kept_share is None  # an error row has none


def test_prompt_kept_share_averages_heads_and_any_takes_their_union(llama):
    """Random eviction keeps a different part of the prompt in each (layer, KV head): the share is the
    mean of what each keeps, `any` the union, both read from the positions the cache holds at the end."""
    ids = prompt(14, seed=31)
    store = {}
    requests = [Request(0, ids, seed=5), Request(1, prompt(9, seed=32), seed=6, max_new_tokens=12)]
    observer = _final_positions(store)
    outs = run(llama, build_policy("random"), Budget(16, 1), requests, max_new=24, observer=observer, batch_size=2)
    held = [set(p for p in head if p < 14) for layer in store["pos"] for head in layer]  # request 0 finishes last
    share, union = sum(len(h) for h in held) / (14 * len(held)), len(set().union(*held)) / 14
    out = outs[0]
    assert out.prompt_kept_share == pytest.approx(share) and out.prompt_kept_any == pytest.approx(union)
    assert 0 < out.prompt_kept_share < out.prompt_kept_any < 1  # the heads differ, so the union is larger
    assert 0 < outs[1].prompt_kept_share <= outs[1].prompt_kept_any <= 1


def test_random_attention_pins_its_prompt_under_the_hard_cap(llama):
    """By default the prompt is pinned: it stays whole in every head while the cache holds B at most;
    a prompt that cannot fit beside the window is an error row and the others run."""
    budget, slack, window = 16, 4, 2
    policy = build_policy("random_attention", window=window)
    seen = {"steps": 0}

    def observer(cache, keys):
        for layer in cache.layers:
            for b in range(layer.pos.shape[0]):
                n = int(cache.ctx.prompt_len[b])
                for head in layer.pos[b].tolist():
                    held = {p for p in head if p >= 0}
                    assert len(held) <= budget and set(range(n)) <= held
        seen["steps"] += 1

    requests = [Request("long", prompt(13), seed=1), Request("short", prompt(6), seed=2)]
    outs = run(llama, policy, Budget(budget, slack), requests, observer=observer)
    assert "prompt does not fit" in outs["long"].error and "budget 16 with slack 4" in outs["long"].error
    short = outs["short"]
    assert short.error is None and short.n_evicted_tokens > 0 and short.peak_resident_tokens == budget
    assert (short.prompt_kept_share, short.prompt_kept_any) == (1.0, 1.0) and seen["steps"] == 30


def test_records_what_really_happened(llama):
    out = run(llama, build_policy("streaming_llm"), Budget(16, 4), [Request(0, prompt(10))], max_new=30)[0]
    assert out.peak_resident_tokens == 16
    # 10 prompt + 29 appended = 39 entries ever held; 16 - 4 + 1 .. 16 remain
    assert out.n_evicted_tokens % 4 == 0 and 39 - out.n_evicted_tokens in range(13, 17)
    head_dim = llama.config.hidden_size // llama.config.num_attention_heads
    assert out.kv_bytes_peak == 16 * 2 * 2 * 2 * head_dim * 4  # tokens * (k,v) * layers * kv heads * dim * fp32
    assert out.prefill_s > 0 and out.decode_s > 0


@pytest.mark.parametrize(
    "budget,slack,policy,match",
    [
        (0, 1, "h2o", "positive"),
        (-5, 1, "tova", "positive"),
        (16, 16, "tova", "slack=16"),
        (16, 0, "tova", "slack=0"),
        (16, 1, {"name": "streaming_llm", "window": 20}, "protects 24 tokens"),
        (64, 1, {"name": "snapkv", "obs_window": 64}, "raise budget.tokens to at least 65"),
        (None, 1, "h2o", "needs a token budget"),
    ],
)
def test_bad_budget_fails_before_model_load(budget, slack, policy, match):
    with pytest.raises(ConfigError, match=match):
        Budget(budget, slack).check(build_policy(policy))
    with pytest.raises(ConfigError, match="budget.schedule must be one of cap, interval"):
        Budget(16, 1, "every").check(build_policy("h2o"))


def test_unknown_policy_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown policy 'h3o'") as err:
        build_policy("h3o")
    assert str(err.value).endswith("valid policies: " + ", ".join(POLICY_NAMES))  # every registered one, in order
    with pytest.raises(ConfigError, match="unknown parameter"):
        build_policy({"name": "h2o", "windw": 3})


def test_model_kvexp_cannot_drive_is_refused_from_its_config():
    from transformers import GPT2Config, MistralConfig

    with pytest.raises(ConfigError, match="model_type 'gpt2'"):
        check_model_config(GPT2Config())
    with pytest.raises(ConfigError, match="sliding_window=4096"):
        check_model_config(MistralConfig(sliding_window=4096))
    check_model_config(MistralConfig(sliding_window=None))


# ---- continuous batching: rows refilled mid-decode ----


def _staggered_requests(n=7):
    """Prompts of different lengths (some over the budget) and lengths imposed per request, so rows
    finish at different steps and later requests enter rows that earlier ones filled."""
    lengths, caps = (5, 19, 11, 27, 8, 23, 14), (9, 30, 4, 17, 25, 1, 12)
    return [Request(i, prompt(lengths[i], seed=40 + i), seed=500 + i, max_new_tokens=caps[i]) for i in range(n)]


@pytest.mark.parametrize("slack", [1, 2])  # one eviction a step (a min) and several (a sort)
@pytest.mark.parametrize("name", POLICY_NAMES)
def test_admissions_mid_decode_change_no_output(llama, name, slack):
    policy = build_policy(name, **SMALL_WINDOWS[name])
    budget = Budget(16, slack) if policy.evicts else Budget(None)
    requests = _staggered_requests()
    events = []

    def watch(cache, keys):
        live = sum(k is not None for k in keys)
        events.append((cache.ctx.prefill, live, len(cache.ctx.incoming)))

    batched = run(llama, policy, budget, requests, batch_size=3, observer=watch)
    # newcomers were prefilled while other rows were mid-decode
    assert any(prefill and live > newcomers for prefill, live, newcomers in events)
    for req in requests:
        alone = run(llama, policy, budget, [req])[req.key]
        assert batched[req.key].output_ids == alone.output_ids, req.key
        assert len(alone.output_ids) == req.max_new_tokens and alone.stop_reason == "max_new_tokens"
        for field in ("n_evicted_tokens", "peak_resident_tokens", "kv_bytes_peak", "n_prompt_tokens"):
            assert getattr(batched[req.key], field) == getattr(alone, field), (req.key, field)


def test_continuous_and_static_batching_agree_and_sampling_follows_the_request(llama):
    policy = build_policy("snapkv", obs_window=4)
    requests = _staggered_requests()
    sampling = dict(temperature=0.9, top_p=0.95, top_k=50)
    continuous = run(llama, policy, Budget(16), requests, batch_size=3, **sampling)
    static = run(llama, policy, Budget(16), requests[::-1], batch_size=2, continuous=False, **sampling)
    one_row = run(llama, policy, Budget(16), requests[2:5], batch_size=1, **sampling)
    for req in requests:
        assert continuous[req.key].output_ids == static[req.key].output_ids
    for key, out in one_row.items():
        assert out.output_ids == continuous[key].output_ids


def test_static_batches_wait_for_their_longest_row_and_continuous_ones_do_not(llama):
    requests = _staggered_requests()
    forwards = {}
    for continuous in (True, False):
        count = []
        run(
            llama,
            build_policy("h2o", window=4),
            Budget(16),
            requests,
            batch_size=3,
            continuous=continuous,
            observer=lambda cache, keys: count.append(cache.ctx.prefill),
        )
        forwards[continuous] = count.count(False)
    # static: batches {9,30,4}, {17,25,1}, {12} cost 29 + 24 + 11 decode steps; continuous fewer
    assert forwards[False] == 29 + 24 + 11
    assert forwards[True] < forwards[False]


def test_a_failing_row_becomes_an_error_and_its_neighbours_finish(llama):
    requests = _staggered_requests(5)

    def fail_on_key_3(cache, keys):
        if 3 in keys and not cache.ctx.prefill:
            raise RuntimeError("boom")

    outs = run(llama, build_policy("h2o", window=4), Budget(16), requests, batch_size=2, observer=fail_on_key_3)
    assert set(outs) == {r.key for r in requests}
    assert "boom" in outs[3].error and outs[3].stop_reason is None
    clean = run(llama, build_policy("h2o", window=4), Budget(16), requests, batch_size=2)
    for key in (0, 1, 2, 4):
        assert outs[key].error is None and outs[key].output_ids == clean[key].output_ids


def test_prefill_groups_respect_the_token_limit(llama):
    requests = _staggered_requests()
    groups = []
    run(
        llama,
        build_policy("full"),
        Budget(None),
        requests,
        batch_size=4,
        max_prefill_tokens=40,
        observer=lambda cache, keys: groups.append(cache.ctx.incoming.tolist()) if cache.ctx.prefill else None,
    )
    assert all(sum(g) <= 40 or len(g) == 1 for g in groups) and any(len(g) > 1 for g in groups)
    assert sorted(n for g in groups for n in g) == sorted(len(r.prompt_ids) for r in requests)
