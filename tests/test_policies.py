"""Scoring rules on hand-built tensors: one batch row, one KV head unless stated."""

from __future__ import annotations

import collections
import dataclasses

import pytest
import torch
from engine_models import prompt

from kvexp.engine import Budget, Engine, GenerationSettings, Request
from kvexp.engine.selection import eviction_order
from kvexp.policies import build_policy
from kvexp.policies.base import LayerView, StepContext


def ctx(incoming, prompt_len=None, seed=0):
    incoming = torch.tensor([incoming])
    return StepContext(
        prefill=False,
        incoming=incoming,
        query_pos=incoming.view(1, 1),
        prompt_len=torch.tensor([prompt_len or 1]),
        row_seed=torch.tensor([seed]),
    )


def view(positions, keys=None, dim=4):
    pos = torch.tensor([[positions]])
    if keys is None:
        keys = torch.ones(1, 1, len(positions), dim)
    return LayerView(torch.as_tensor(keys, dtype=torch.float32).view(1, 1, len(positions), -1), pos)


def first_evicted(policy, state, v, c, budget=64, count=1):
    score = policy.score(state, v, c)
    order = eviction_order(score, v.pos, policy.protected_mask(v.pos, c, budget))
    return v.pos.gather(-1, order)[0, 0, :count].tolist()


def test_eviction_order_breaks_ties_toward_older_whatever_the_storage_order():
    pos = torch.tensor([[[7, 2, 9, 4, -1]]])
    score = torch.tensor([[[1.0, 1.0, 0.5, 1.0, 0.0]]])
    order = eviction_order(score, pos, torch.zeros_like(pos, dtype=torch.bool))
    assert pos.gather(-1, order)[0, 0].tolist() == [-1, 9, 2, 4, 7]


def test_h2o_accumulates_all_queries_in_fp32_per_state():
    policy = build_policy("h2o", window=0)
    a, b = policy.init_state(1, 1, 3, "cpu"), policy.init_state(1, 1, 3, "cpu")
    policy.observe(a, torch.tensor([[[[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]]]), ctx(2))
    policy.observe(a, torch.tensor([[[[0.1, 0.1, 0.8]]]]), ctx(3))
    policy.observe(b, torch.tensor([[[[0.0, 0.0, 1.0]]]]), ctx(3))
    assert a["received"].dtype == torch.float32
    assert torch.allclose(a["received"], torch.tensor([[[0.8, 0.9, 1.3]]]))
    assert torch.allclose(b["received"], torch.tensor([[[0.0, 0.0, 1.0]]]))  # another layer's state is untouched
    v = view([0, 1, 2])
    assert first_evicted(policy, a, v, ctx(3)) == [0]
    mean = build_policy("h2o", window=0, normalize="mean")
    # mean divides by the queries that saw each token: positions 0,1,2 seen by 3,2,1 queries
    assert torch.allclose(mean.score(a, v, ctx(3)), torch.tensor([[[0.8 / 3, 0.9 / 2, 1.3]]]))


def test_h2o_state_is_per_layer_in_a_real_run(llama):
    states = {}

    def keep_states(cache, keys):
        states["received"] = [layer.state["received"].clone() for layer in cache.layers]

    Engine(
        llama, build_policy("h2o", window=4), Budget(16), GenerationSettings(max_new_tokens=12), observer=keep_states
    ).generate([Request(0, prompt(10))]).__next__()
    r0, r1 = states["received"]
    assert r0.data_ptr() != r1.data_ptr() and not torch.allclose(r0, r1)


def test_tova_uses_the_current_query_only():
    policy = build_policy("tova")
    state = policy.init_state(1, 1, 3, "cpu")
    policy.observe(state, torch.tensor([[[[0.9, 0.05, 0.05]]]]), ctx(3))
    policy.observe(state, torch.tensor([[[[0.1, 0.3, 0.6]]]]), ctx(4))
    assert first_evicted(policy, state, view([0, 1, 2]), ctx(4)) == [0]


def test_knorm_evicts_high_norm_keys_first():
    policy = build_policy("knorm")
    keys = torch.tensor([[3.0, 0], [1, 0], [2, 0], [5, 0]])
    v = view([0, 1, 2, 3], keys)
    assert first_evicted(policy, policy.init_state(1, 1, 4, "cpu"), v, ctx(4), count=4) == [3, 0, 2, 1]


def test_knorm_equal_norms_tie_whatever_their_last_bits():
    policy = build_policy("knorm")
    # one token's key at three positions: equal norms in exact arithmetic, noise in the last bits
    norm = torch.tensor(5.909689426422119)
    noisy = [norm, norm * (1 + 2**-23), norm * (1 - 2**-22)]
    keys = torch.stack([torch.stack([n, torch.tensor(0.0)]) for n in noisy] + [torch.tensor([1.0, 0.0])])
    for order in ([0, 1, 2, 3], [2, 0, 3, 1]):
        v = view(order, keys[order])
        assert first_evicted(policy, policy.init_state(1, 1, 4, "cpu"), v, ctx(4), count=3) == [0, 1, 2]


def test_snapkv_protects_its_window_and_rescores_with_recent_queries():
    policy = build_policy("snapkv", obs_window=2, kernel=1)
    state = policy.init_state(1, 1, 6, "cpu")
    v = view([0, 1, 2, 3, 4, 5])
    policy.observe(state, torch.tensor([[[[0.1, 0.6, 0.3, 0.0, 0.0, 0.0]]]]), ctx(5))
    policy.observe(state, torch.tensor([[[[0.1, 0.5, 0.4, 0.0, 0.0, 0.0]]]]), ctx(6))
    # positions 4 and 5 have no attention but form the observation window: protected
    assert first_evicted(policy, state, v, ctx(6), count=2) == [3, 0]
    # a third query pushes the first out of the window: the scores follow the last two only
    policy.observe(state, torch.tensor([[[[0.9, 0.0, 0.1, 0.0, 0.0, 0.0]]]]), ctx(7))
    assert torch.allclose(policy.queries.mean(state, ctx(7)), torch.tensor([[[0.5, 0.25, 0.25, 0, 0, 0]]]))


def test_snapkv_pools_along_positions_not_slots():
    policy = build_policy("snapkv", obs_window=1, kernel=3, window=0)
    state = policy.init_state(1, 1, 5, "cpu")
    policy.observe(state, torch.tensor([[[[0.0, 0.9, 0.0, 0.1, 0.0]]]]), ctx(5))
    # slots hold positions out of order: position 0 has 0.9 and position 1 has 0.1
    v = view([2, 0, 4, 1, 3])
    pooled = policy.score(state, v, ctx(5))
    by_pos = {p: float(s) for p, s in zip(v.pos[0, 0].tolist(), pooled[0, 0])}
    expected = {0: 1.0 / 3, 1: 1.0 / 3, 2: 0.1 / 3, 3: 0.0, 4: 0.0}  # kernel 3, zero padding at the ends
    assert all(abs(by_pos[p] - e) < 1e-6 for p, e in expected.items())


def test_rkv_subtracts_redundancy_and_keeps_the_most_recent_duplicate():
    policy = build_policy("rkv", obs_window=1, kernel=1, window=0, lam=0.1)
    n = 5
    keys = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    v = view(list(range(n)), keys)
    state = policy.init_state(1, 1, n, "cpu")
    policy.observe(state, torch.full((1, 1, 1, n), 1.0 / n), ctx(n))
    score = policy.score(state, v, ctx(n))[0, 0]
    assert score[0] < score[1] < score[3]  # redundant keys score lower: it is subtracted
    assert torch.isclose(score[2], score[4])  # the newest copy loses its pairs: it looks unique
    assert first_evicted(policy, state, v, ctx(n), count=2) == [0, 1]  # the newest duplicate stays
    # with lam = 1 redundancy is ignored and uniform attention leaves only the age tie-break
    importance_only = build_policy("rkv", obs_window=1, kernel=1, window=0, lam=1.0)
    assert torch.allclose(importance_only.score(state, v, ctx(n)), torch.full((1, 1, n), 1.0 / n))


def _rkv_redundancy_as_published(keys: torch.Tensor, threshold: float) -> torch.Tensor:
    """R-KV's `cal_similarity` (rkv/utils.py), transcribed for keys [N, D] in position order, with
    kvexp's one stated difference: a row without a near-duplicate drops nothing (the authors' code
    zeroes its entry for token 0 there)."""
    unit = keys / (keys.norm(dim=-1, keepdim=True) + 1e-8)
    sim = unit @ unit.T
    sim.fill_diagonal_(0.0)
    n = len(keys)
    is_dup = sim > threshold
    latest = torch.where(is_dup, torch.arange(n), 0).max(dim=-1).values
    for i in range(n):
        if is_dup[i].any():
            sim[i, latest[i]] = 0.0
    return sim.mean(dim=-2).softmax(dim=-1)


def _rkv_redundancy(keys: torch.Tensor, positions: list[int], threshold: float = 0.5) -> torch.Tensor:
    """kvexp's R-KV redundancy for keys [N, D] stored in slots holding `positions`."""
    policy = build_policy("rkv", obs_window=1, kernel=1, window=0, lam=0.0, threshold=threshold)
    n = len(positions)
    v = view(positions, keys)
    state = policy.init_state(1, 1, n, "cpu")
    policy.observe(state, torch.full((1, 1, 1, n), 1.0 / n), ctx(max(positions) + 1))
    return -policy.score(state, v, ctx(max(positions) + 1))[0, 0]


def _unit_keys_with_cosines(gram: torch.Tensor) -> torch.Tensor:
    return torch.linalg.cholesky(gram.double()).float()  # rows: unit vectors whose dot products are `gram`


def test_rkv_redundancy_keeps_the_newest_of_three_near_duplicates():
    # a, b, c mutually similar (cos(a,b)=0.55, cos(a,c)=cos(b,c)=0.85), d orthogonal to all
    gram = torch.tensor([[1, 0.55, 0.85, 0], [0.55, 1, 0.85, 0], [0.85, 0.85, 1, 0], [0, 0, 0, 1.0]])
    keys = _unit_keys_with_cosines(gram)
    red = _rkv_redundancy(keys, [0, 1, 2, 3])
    assert torch.allclose(red, torch.tensor([0.311, 0.251, 0.219, 0.219]), atol=1e-3)
    assert torch.allclose(red, _rkv_redundancy_as_published(keys, 0.5), atol=1e-6)
    policy = build_policy("rkv", obs_window=1, kernel=1, window=0)
    v = view([0, 1, 2, 3], keys)
    state = policy.init_state(1, 1, 4, "cpu")
    policy.observe(state, torch.full((1, 1, 1, 4), 0.25), ctx(4))
    assert first_evicted(policy, state, v, ctx(4)) == [0]  # a goes, c (the newest duplicate) stays


def test_rkv_redundancy_matches_the_published_rule_on_random_keys_in_any_slot_order():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 8, generator=g)
    # clusters of near-duplicates plus loners, so several rows have 2+ duplicates and some none
    keys = torch.cat(
        [base[i % 4] + 0.35 * torch.randn(1, 8, generator=g) for i in range(14)] + [torch.randn(3, 8, generator=g)]
    )
    expected = _rkv_redundancy_as_published(keys, 0.5)
    perm = torch.randperm(len(keys), generator=g)
    red = _rkv_redundancy(keys[perm], perm.tolist())  # slot s holds position perm[s]
    assert torch.allclose(red, expected[perm], atol=1e-6)
    counts = ((keys / keys.norm(dim=-1, keepdim=True)) @ (keys / keys.norm(dim=-1, keepdim=True)).T > 0.5).sum(-1) - 1
    assert (counts >= 2).any() and (counts == 0).any()  # the case the row rule got wrong, and the stated difference


def test_streaming_llm_sinks_are_positions_not_slots():
    policy = build_policy("streaming_llm", n_sink=2)
    v = view([5, 1, 6, 0, 3, 4])
    evicted = first_evicted(policy, policy.init_state(1, 1, 6, "cpu"), v, ctx(7), count=4)
    assert evicted == [3, 4, 5, 6]


def test_random_is_seeded_per_row_and_step():
    policy = build_policy("random")
    v = view(list(range(8)))
    a = policy.score(None, v, ctx(8, seed=1))
    assert torch.equal(a, policy.score(None, v, ctx(8, seed=1)))
    assert not torch.equal(a, policy.score(None, v, ctx(8, seed=2)))
    assert not torch.equal(a, policy.score(None, v, ctx(9, seed=1)))
    assert ((a >= 0) & (a < 1)).all()


def _keydiff_as_kvpress(keys):
    """KeyDiffPress.score transcribed (kvpress, kvpress/presses/keydiff_press.py): keys [B, H, N, D]."""
    anchor = torch.nn.functional.normalize(keys, p=2, dim=-1).mean(dim=2, keepdim=True)
    return -torch.nn.functional.cosine_similarity(keys, anchor, dim=-1)


def test_keydiff_evicts_the_keys_closest_to_the_mean_direction_first():
    policy = build_policy("keydiff")
    # three keys along x (of different lengths: only the direction counts, so they tie), one along y and
    # one on the diagonal, which lies closest to the mean direction (3.7, 1.7) / 5
    keys = torch.tensor([[2.0, 0], [1, 0], [0, 3], [5, 0], [1, 1]])
    v = view([0, 1, 2, 3, 4], keys)
    assert first_evicted(policy, policy.init_state(1, 1, 5, "cpu"), v, ctx(5), count=5) == [4, 0, 1, 3, 2]


def test_keydiff_matches_kvpress_formula_over_resident_slots_in_any_slot_order():
    policy = build_policy("keydiff")
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(2, 3, 11, 8, generator=g) + torch.tensor([1.5] + [0.0] * 7)  # a shared direction
    expected = _keydiff_as_kvpress(keys)
    # the same tokens stored in shuffled slots, with empty slots holding stale keys in between
    n_slots = 16
    slots = torch.randperm(n_slots, generator=g)[:11]
    stored = torch.randn(2, 3, n_slots, 8, generator=g) * 50
    stored[:, :, slots] = keys
    pos = torch.full((2, 3, n_slots), -1)
    pos[:, :, slots] = torch.arange(11)
    score = policy.score(policy.init_state(2, 3, n_slots, "cpu"), LayerView(stored, pos), ctx(11))
    assert torch.allclose(score[:, :, slots], expected, atol=1e-6)


def test_keydiff_matches_kvpress_keydiffpress():
    keydiff_press = pytest.importorskip("kvpress.presses.keydiff_press")
    press = keydiff_press.KeyDiffPress(compression_ratio=0.5)
    g = torch.Generator().manual_seed(1)
    keys = torch.randn(2, 3, 13, 8, generator=g) + 0.7
    expected = press.score(None, None, keys, keys, None, {})
    policy = build_policy("keydiff")
    pos = torch.arange(13).expand(2, 3, 13)
    score = policy.score(policy.init_state(2, 3, 13, "cpu"), LayerView(keys, pos), ctx(13))
    assert expected.shape == score.shape
    assert torch.allclose(score, expected, atol=1e-6)


def _gkv_as_published(rows, keys, score_cache, window, lam=0.5, alpha=0.8, threshold=0.5):
    """G-KV's `ScoreBasedKV.update_kv` (gkv/model/compression/score_based.py) with its G-KV recipe
    (suppressing_redundancy, enable_score_cache, smooth_method max, norm on), transcribed for one head
    in position order: rows [W, N] the window queries' attention, keys [N, D], score_cache [C] the
    previous global scores of the first C tokens. Returns (score, new score cache) of the N - W
    tokens outside the window."""
    final = rows.mean(dim=0)[:-window]  # compute_attention_scores drops the window's keys
    final = final / final.max()
    old = torch.cat([score_cache, final[len(score_cache) :]])
    final = torch.maximum(old * alpha, final)
    # cal_similarity_triton: column j loses its pair with the latest row i whose cosine is > threshold
    unit = keys / (keys.norm(dim=-1, keepdim=True) + 1e-6)
    sim = unit @ unit.T
    sim.fill_diagonal_(0.0)
    n = len(keys)
    for j in range(n):
        dups = [i for i in range(n) if sim[i, j] > threshold]
        if dups:
            sim[max(dups), j] = 0.0
    similarity = (sim.sum(dim=1) / n).softmax(dim=-1)[:-window]
    similarity = similarity / similarity.max()
    return final * lam - similarity * (1 - lam), final


def test_gkv_matches_its_published_update_over_resident_slots_in_any_slot_order():
    g = torch.Generator().manual_seed(2)
    n, w, d = 12, 3, 8
    base = torch.randn(3, d, generator=g)
    keys = torch.cat(
        [base[i % 3] + 0.4 * torch.randn(1, d, generator=g) for i in range(n - 2)] + [torch.randn(2, d, generator=g)]
    )  # near-duplicates and loners
    rows = torch.rand(w, n, generator=g).softmax(dim=-1)
    score_cache = 1.0 + 0.5 * torch.rand(5, generator=g)  # tokens 0..4 survived an eviction
    expected, expected_cache = _gkv_as_published(rows, keys, score_cache, w)

    policy = build_policy("gkv", obs_window=w)
    n_slots = n + 2
    slots = torch.randperm(n_slots, generator=g)[:n]  # slot of position p; two stay empty
    stored = torch.randn(1, 1, n_slots, d, generator=g) * 30
    stored[0, 0, slots] = keys
    pos = torch.full((1, 1, n_slots), -1)
    pos[0, 0, slots] = torch.arange(n)
    state = policy.init_state(1, 1, n_slots, "cpu")
    state["recent"][0, 0, :, slots] = rows
    state["history"][0, 0, slots[:5]] = score_cache
    score = policy.score(state, LayerView(stored, pos), ctx(n))
    outside = slots[: n - w]
    assert torch.allclose(score[0, 0, outside], expected, atol=1e-5)
    assert torch.allclose(state["history"][0, 0, outside], expected_cache, atol=1e-5)
    assert (state["history"][0, 0, slots[n - w :]] == 0).all()  # the window carries no history
    # the history matters: a token whose cached score beats its local attention keeps it (times alpha)
    assert (expected_cache[:5] > rows.mean(0)[:5] / rows.mean(0)[: n - w].max()).any()

    # a prompt compressed at prefill scores the same way but starts no history (G-KV's prefill)
    state["history"].zero_()
    without_history, _ = _gkv_as_published(rows, keys, torch.zeros(0), w)
    score = policy.score(state, LayerView(stored, pos), dataclasses.replace(ctx(n), prefill=True))
    assert torch.allclose(score[0, 0, outside], without_history, atol=1e-5)
    assert (state["history"] == 0).all()


# ---- TriAttention ----


def _triattention_case(seed=0, scaling=1.3):
    """Two rows, two KV heads of two query heads each, head_dim 8: random calibrated statistics, keys
    rotated by RoPE (with attention scaling) at scattered positions, empty slots holding stale keys."""
    from kvexp.policies.triattention_stats import QueryStats

    g = torch.Generator().manual_seed(seed)
    b, h, group, n, d = 2, 2, 2, 12, 8
    f = d // 2
    q_mean = torch.complex(torch.randn(1, h * group, f, generator=g), torch.randn(1, h * group, f, generator=g))
    stats = QueryStats(
        q_mean,
        q_mean.abs() + torch.rand(1, h * group, f, generator=g),
        1.0 / 10000 ** (torch.arange(0, d, 2).float() / d),
        scaling,
    )
    pos = torch.stack([torch.stack([torch.randperm(40, generator=g)[:n] for _ in range(h)]) for _ in range(b)])
    pos[0, 1, 3] = pos[1, 0, 7] = -1  # empty slots
    k_pre = torch.randn(b, h, n, d, generator=g)
    angle = pos.clamp(min=0).float().unsqueeze(-1) * stats.inv_freq  # as the model computes it
    cos, sin = torch.cat([angle, angle], -1).cos() * scaling, torch.cat([angle, angle], -1).sin() * scaling
    keys = k_pre * cos + torch.cat([-k_pre[..., f:], k_pre[..., :f]], -1) * sin
    keys[pos < 0] = 50.0  # stale keys must not count
    incoming, prompt_len = torch.tensor([40, 57]), torch.tensor([5, 9])
    c = StepContext(
        prefill=False,
        incoming=incoming,
        query_pos=incoming.view(-1, 1),
        prompt_len=prompt_len,
        row_seed=torch.tensor([0, 1]),
        layer_idx=0,
    )
    return stats, LayerView(keys, pos), c, group


@pytest.mark.parametrize("params", [{}, {"protect_prompt": True, "group_agg": "mean"}, {"n_sink": 3, "window": 4}])
def test_triattention_matches_the_authors_formula_over_resident_slots(params):
    from reference import triattention_scores

    policy = build_policy("triattention", **params)
    stats, v, c, group = _triattention_case()
    policy.use_stats(stats)
    score = policy.score(policy.init_state(2, 2, 12, "cpu"), v, c)
    # the tokens that compete, written out: not a sink, not in the recent window, not a pinned prompt token
    n_sink, window, pinned = params.get("n_sink", 0), params.get("window", 0), params.get("protect_prompt", False)
    for b in range(2):
        t, prompt = int(c.incoming[b]), int(c.prompt_len[b])
        for h in range(2):
            pos = v.pos[b, h].tolist()
            live = [i for i, p in enumerate(pos) if p >= 0]
            competing = [not (pos[i] < n_sink or pos[i] >= t - window or (pinned and pos[i] < prompt)) for i in live]
            expected = triattention_scores(
                v.keys[b, h, live].double(),
                [pos[i] for i in live],
                int(c.incoming[b]),
                stats,
                0,
                h,
                group,
                competing,
                policy.group_agg,
            )
            got = [float(score[b, h, i]) for i in live]
            ranked = [i for i, flag in zip(range(len(live)), competing) if flag]
            assert max(abs(got[i] - expected[i]) for i in ranked) < 2e-4, (b, h)
            assert sorted(ranked, key=lambda i: got[i]) == sorted(ranked, key=lambda i: expected[i])


def test_triattention_score_ignores_the_storage_order_and_needs_its_statistics():
    policy = build_policy("triattention")
    stats, v, c, _ = _triattention_case(seed=1)
    with pytest.raises(RuntimeError, match="calibration statistics"):
        policy.score(None, v, c)
    policy.use_stats(stats)
    base = policy.score(None, v, c)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(5))
    shuffled = policy.score(None, LayerView(v.keys[:, :, perm], v.pos[:, :, perm]), c)
    assert torch.allclose(shuffled, base[:, :, perm], atol=1e-5)


def _captured_queries(model, ids):
    """Pre-RoPE queries [B, T, Hq, D] read straight off the projections (after Qwen3's q_norm)."""
    config = model.config
    out = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        site = getattr(attn, "q_norm", None) or attn.q_proj
        hooks.append(site.register_forward_hook(lambda m, a, o, i=i: out.__setitem__(i, o.detach())))
    try:
        with torch.inference_mode():
            model(input_ids=torch.tensor(ids))
    finally:
        for hook in hooks:
            hook.remove()
    d = config.head_dim if getattr(config, "head_dim", None) else config.hidden_size // config.num_attention_heads
    return [out[i].reshape(len(ids), len(ids[0]), config.num_attention_heads, d) for i in range(len(out))]


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_triattention_calibration_equals_a_plain_recomputation(arch):
    from engine_models import tiny_model

    from kvexp.policies.triattention_stats import CalibrationSettings, calibration_sequences, query_statistics

    model = tiny_model(arch)
    settings = CalibrationSettings(prompts=3, tokens=10, seed=4)
    ids = calibration_sequences(model, settings)
    bos = model.config.bos_token_id
    start = 2 if isinstance(bos, int) else 1  # BOS, if any, then a seeded token
    assert len(ids) == 3 and all(len(s) == start + 10 for s in ids) and all(s[0] == bos for s in ids if start == 2)
    assert calibration_sequences(model, settings) == ids
    assert calibration_sequences(model, CalibrationSettings(prompts=3, tokens=10, seed=5)) != ids
    stats = query_statistics(model, ids)
    for layer, q in enumerate(_captured_queries(model, ids)):
        f = q.shape[-1] // 2
        pairs = torch.complex(q[..., :f].double(), q[..., f:].double())  # [B, T, Hq, F]
        assert torch.allclose(stats.q_mean[layer].to(torch.complex128), pairs.mean(dim=(0, 1)), atol=1e-5)
        assert torch.allclose(stats.q_abs_mean[layer].double(), pairs.abs().mean(dim=(0, 1)), atol=1e-5)
    assert torch.equal(stats.inv_freq, model.model.rotary_emb.inv_freq.float())


def test_triattention_calibration_is_cached_once_reused_and_kept_per_model(tmp_path, monkeypatch):
    from engine_models import tiny_model

    from kvexp.policies import triattention_stats as ts

    monkeypatch.setenv("KVEXP_CACHE", str(tmp_path))
    settings = ts.CalibrationSettings(prompts=2, tokens=8)
    model = tiny_model("llama")
    first = ts.load_or_calibrate(model, settings)
    files = list((tmp_path / "triattention").iterdir())
    assert [f.name for f in files] == [ts.cache_path(model, settings).name]  # no temporary file left behind
    payload = torch.load(files[0], weights_only=True)
    assert payload["prompts"] == ts.calibration_sequences(model, settings)
    assert payload["settings"] == {"prompts": 2, "tokens": 8, "seed": 0}
    assert torch.equal(torch.complex(payload["q_mean_real"], payload["q_mean_imag"]), first.q_mean)

    def no_calibration(*args):
        raise AssertionError("calibrated again")

    monkeypatch.setattr(ts, "query_statistics", no_calibration)
    again = ts.load_or_calibrate(model, settings)  # reused, not recomputed
    assert torch.equal(again.q_mean, first.q_mean) and torch.equal(again.q_abs_mean, first.q_abs_mean)
    policy = build_policy("triattention", calibration_prompts=2, calibration_tokens=8)
    Engine(model, policy, Budget(16), GenerationSettings(max_new_tokens=4))  # the engine prepares it from the cache
    assert torch.equal(policy.stats.q_mean, first.q_mean)
    other = tiny_model("llama", seed=1)  # other weights: another entry
    with pytest.raises(AssertionError, match="calibrated again"):
        ts.load_or_calibrate(other, settings)
    with pytest.raises(AssertionError, match="calibrated again"):
        ts.load_or_calibrate(model, ts.CalibrationSettings(prompts=2, tokens=9))  # other settings too
    monkeypatch.undo()
    monkeypatch.setenv("KVEXP_CACHE", str(tmp_path))
    ts.load_or_calibrate(other, settings)
    assert len(list((tmp_path / "triattention").iterdir())) == 2
    files[0].write_bytes(b"torn")  # a damaged entry is recomputed
    assert torch.equal(ts.load_or_calibrate(model, settings).q_mean, first.q_mean)
    assert torch.load(files[0], weights_only=True)["prompts"] == payload["prompts"]


def test_triattention_refuses_a_rope_whose_frequencies_follow_the_length():
    from engine_models import tiny_model

    model = tiny_model("llama", rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    with pytest.raises(ValueError, match="rope_type 'dynamic'"):
        Engine(model, build_policy("triattention"), Budget(16), GenerationSettings(max_new_tokens=4))


# ---- Random Attention and VaSE: their rules transcribed, compared on the same eviction ----


def _random_pp_as_published(n_cand, prompt_len, keep, generator):
    """Random Attention's `random_pp` (kvcompress/engine/cache_utils.py L389-398) for one (row, KV head):
    the indices of `keep` (their K) of the n_cand candidates kept, the first prompt tokens pinned."""
    pl = min(prompt_len, keep - 1)
    rs = torch.rand(1, 1, n_cand, generator=generator)
    rs[..., :pl] = float("inf")
    return set(rs.topk(keep, dim=-1).indices[0, 0].tolist())


def _kept_after_eviction(policy, state, v, c, budget, count):
    """The positions [B, H] sets left after evicting `count` entries by the engine's selection (empty
    slots come first in its order, so they are skipped)."""
    order = eviction_order(policy.score(state, v, c), v.pos, policy.protected_mask(v.pos, c, budget))
    gone = v.pos.gather(-1, order[..., : count + int((v.pos[0, 0] < 0).sum())])
    return [[set(v.pos[b, h].tolist()) - set(gone[b, h].tolist()) - {-1} for h in range(v.pos.shape[1])]
            for b in range(v.pos.shape[0])]  # fmt: skip


def test_random_attention_keeps_prompt_and_buffer_and_draws_the_rest_as_random_pp():
    # their regime in small: token_budget T = 12, buffer R = 4 -> budget.tokens 16, slack 4, window 4;
    # a 3-token prompt; at the compression 16 entries are resident (positions 0..15)
    prompt_len, budget, slack, window, draws = 3, 16, 4, 4, 3000
    policy = build_policy("random_attention", window=window)
    assert policy.protect_prompt  # pinned by default
    v = LayerView(torch.zeros(1, 2, budget, 4), torch.arange(budget).expand(1, 2, budget))
    ours = collections.Counter()
    pairs = 0
    for seed in range(draws):
        kept = _kept_after_eviction(policy, None, v, ctx(budget, prompt_len, seed), budget, slack)[0]
        for h in range(2):
            assert set(range(prompt_len)) | set(range(budget - window, budget)) <= kept[h]
            assert len(kept[h]) == budget - slack
            ours.update(kept[h] & set(range(prompt_len, budget - window)))
        pairs += 7 in kept[0] and 7 in kept[1]
    theirs = collections.Counter()
    g = torch.Generator().manual_seed(0)
    for _ in range(draws):
        # their candidates: everything but the buffer; they keep T - R of them, then the buffer
        theirs.update(_random_pp_as_published(budget - window, prompt_len, budget - slack - window, g) - {0, 1, 2})
    for p in range(prompt_len, budget - window):
        assert abs(ours[p] / (2 * draws) - theirs[p] / draws) < 0.05, p
        assert abs(ours[p] / (2 * draws) - 5 / 9) < 0.04  # 5 of the 9 drawn positions are kept
    assert abs(pairs / draws - (5 / 9) ** 2) < 0.04  # the two KV heads draw independently


def _vase_case(seed=0, n=20, window=4, d=8):
    """One (row, KV head): n resident entries at positions 0..n-1, stored in shuffled slots with two
    empty ones, the last `window` being the buffer whose queries score the candidates."""
    g = torch.Generator().manual_seed(seed)
    keys, values = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g) * torch.rand(n, 1, generator=g) * 3
    queries = torch.randn(window, d, generator=g)
    # the rows the buffer's queries really paid at their own steps: causal over every entry then resident
    rows = torch.zeros(window, n)
    for i, qp in enumerate(range(n - window, n)):
        rows[i, : qp + 1] = torch.softmax(queries[i] @ keys[: qp + 1].T / d**0.5, dim=-1)
    n_slots = n + 2
    slots = torch.randperm(n_slots, generator=g)[:n]  # slot of position p
    pos = torch.full((1, 1, n_slots), -1)
    pos[0, 0, slots] = torch.arange(n)
    stored_k, stored_v = torch.randn(1, 1, n_slots, d) * 40, torch.randn(1, 1, n_slots, d) * 40  # stale where empty
    stored_k[0, 0, slots], stored_v[0, 0, slots] = keys, values
    return keys, values, queries, rows, slots, LayerView(stored_k, pos, stored_v)


def _vase_as_published(keys, values, queries, window, n_large, n_sink=4):
    """VaSE's `range_sink_sample_attn` at its first compression (cache_utils.py L185-219, storage order
    = position order then): returns (the large ids, the sampling weights of the candidates, how many
    it draws). keys/values [n, D] in position order, queries [window, D] the buffer's."""
    n, d = keys.shape
    k_cand, v_cand = keys[: n - window], values[: n - window]
    v_magnitude = v_cand.amax(-1) - v_cand.amin(-1)
    v_magnitude[:n_sink] = float("inf")
    attn = torch.softmax(queries @ k_cand.T / d**0.5, dim=-1).mean(0)  # over the candidates only
    attn = torch.nn.functional.avg_pool1d(attn.view(1, 1, -1), kernel_size=5, padding=2, stride=1).view(-1)
    ids_large = v_magnitude.topk(n_large).indices
    attn[ids_large] = 0.0
    keep = (n - window) - window  # their K = token_budget - residual, token_budget = the candidates
    return set(ids_large.tolist()), attn, keep - n_large


def test_vase_protects_the_largest_value_ranges_and_samples_as_their_multinomial(monkeypatch):
    import kvexp.policies.vase as vase_module

    n, window, slack = 20, 4, 4
    policy = build_policy("vase", obs_window=window, large_share=0.5)
    keys, values, queries, rows, slots, v = _vase_case(n=n, window=window)
    state = policy.init_state(1, 1, n + 2, "cpu")
    state["recent"][0, 0, :, slots] = rows
    large, weights, n_drawn = _vase_as_published(keys, values, queries, window, n_large=8)
    assert len(large & {0, 1, 2, 3}) == 4 and n_drawn == 4  # the sinks are among the 8 large

    # exact: with their generator's exponential draws as ours, the kept sets are theirs
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        theirs = torch.multinomial(weights.view(1, -1), n_drawn, replacement=False, generator=g)[0].tolist()
        exp_draws = torch.empty(1, n - window).exponential_(1, generator=torch.Generator().manual_seed(seed))
        u = torch.full((1, 1, n + 2), 0.5)
        u[0, 0, slots[: n - window]] = torch.exp(-exp_draws[0])
        monkeypatch.setattr(vase_module, "eviction_draws", lambda view, c, u=u: u)
        kept = _kept_after_eviction(policy, state, v, ctx(n, 1, seed), n, slack)[0][0]
        assert kept == large | set(theirs) | set(range(n - window, n)), seed
    monkeypatch.undo()

    # the seeded draws: inclusion frequencies as their sampler's
    draws, ours, theirs = 3000, collections.Counter(), collections.Counter()
    g = torch.Generator().manual_seed(0)
    for seed in range(draws):
        ours.update(_kept_after_eviction(policy, state, v, ctx(n, 1, seed), n, slack)[0][0] - large)
        theirs.update(torch.multinomial(weights.view(1, -1), n_drawn, replacement=False, generator=g)[0].tolist())
    drawn = set(range(n - window)) - large
    assert max(abs(ours[p] / draws - theirs[p] / draws) for p in drawn) < 0.05
    assert max(theirs[p] for p in drawn) - min(theirs[p] for p in drawn) > draws / 4  # the weights matter


def test_vase_with_a_pinned_prompt_draws_from_the_rest_as_their_vase_pp():
    n, window, prompt_len = 20, 4, 6
    policy = build_policy("vase", obs_window=window, large_share=0.25, protect_prompt=True)
    keys, values, queries, rows, slots, v = _vase_case(seed=1, n=n, window=window)
    state = policy.init_state(1, 1, n + 2, "cpu")
    state["recent"][0, 0, :, slots] = rows
    score = policy.score(state, v, ctx(n, prompt_len, 0))
    # vase_pp (Random Attention's cache_utils.py): the prompt leaves the range pool; n_large = K/4 of the
    # 16 candidates; the attention is still the softmax over all of them
    v_cand = values[: n - window]
    value_range = (v_cand.amax(-1) - v_cand.amin(-1))[prompt_len:]
    large = set((value_range.topk(4).indices + prompt_len).tolist())
    lifted = {int(v.pos[0, 0, i]) for i in range(n + 2) if score[0, 0, i] > 1e6}
    assert lifted - set(range(prompt_len)) == large
    _, weights, _ = _vase_as_published(keys, values, queries, window, n_large=0)
    drawn = [p for p in range(prompt_len, n - window) if p not in large]
    noise = -torch.log(-torch.log(torch.tensor([0.5])))  # a draw of u = 1/2 on every entry
    import kvexp.policies.vase as vase_module

    original = vase_module.eviction_draws
    try:
        vase_module.eviction_draws = lambda view, c: torch.full_like(view.pos, 0.5, dtype=torch.float32)
        score = policy.score(state, v, ctx(n, prompt_len, 0))
    finally:
        vase_module.eviction_draws = original
    got = {int(v.pos[0, 0, i]): float(score[0, 0, i]) for i in range(n + 2)}
    for p in drawn:
        assert got[p] == pytest.approx(float(torch.log(weights[p]) + noise), abs=1e-4), p
