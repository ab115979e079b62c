"""A plain per-step reference for every policy, written without kvexp's machinery: transformers' own
DynamicCache and eager attention (the model returns its attention weights), pruned after every step
by the policy's rule with Python loops over (layer, head, position). Only random's hash is shared,
because that hash *is* the draws of random's rule (and of random_attention's and VaSE's)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kvexp.policies.random import hash_uniform


@dataclass
class Resident:
    """What one (layer, KV head) holds at an eviction, in position order: positions, keys and values [n, D],
    the attention each position received so far {pos: float}, every query's row so far [{pos: prob}], and
    t, the position of the token about to be generated."""

    layer: int
    head: int
    positions: list[int]
    keys: torch.Tensor
    values: torch.Tensor
    received: dict[int, float]
    rows: list[dict[int, float]]
    t: int


#: policy name -> (its defaults at a budget, its rule: (ReferencePolicy, Resident) -> one sort key per
#: position, lowest evicted first). `window="obs_window"` makes the recent window default to obs_window.
RULES: dict[str, tuple[Callable[[int], dict], Callable[[ReferencePolicy, Resident], list]]] = {}


def rule(name: str, defaults: Callable[[int], dict] = lambda budget: {}):
    def register(fn):
        RULES[name] = (defaults, fn)
        return fn

    return register


class MissingReferenceRule(LookupError):
    def __init__(self, name: str):
        super().__init__(
            f"policy {name!r} has no reference rule: add an independent transcription of its rule to "
            f"tests/reference.py as a function decorated with @rule({name!r}, <its defaults>)"
        )


class ReferencePolicy:
    PARAMS = dict(
        window=None, n_sink=0, protect_prompt=False, normalize="sum", obs_window=0, kernel=1, lam=0.1,
        threshold=0.5, seed=0, group_agg="mean", pool="avg", alpha=0.8, stats=None, large_share=None,
    )  # fmt: skip

    def __init__(self, name, budget, slack, *, schedule="cap", **params):
        if name not in RULES:
            raise MissingReferenceRule(name)
        unknown = set(params) - set(self.PARAMS)
        assert not unknown, f"unknown reference parameters {unknown}"
        self.name, self.budget, self.slack, self.schedule = name, budget, slack, schedule
        defaults, self.rule = RULES[name]
        for key, value in {**self.PARAMS, **defaults(budget), **params}.items():
            setattr(self, key, value)
        if self.window in (None, "obs_window"):
            self.window = self.obs_window if self.window == "obs_window" else 0
        self.history = {}  # gkv: (layer, head) -> {position: global score at the last eviction it survived}
        self.prompt_len = 0

    def evict(self, layer, head, positions, keys, values, received, rows, t, prompt_len, count):
        self.prompt_len = prompt_len
        scores = self.rule(self, Resident(layer, head, positions, keys, values, received, rows, t))
        candidates = []
        for p, s in zip(positions, scores):
            protected = p < self.n_sink or p >= t - self.window or (self.protect_prompt and p < prompt_len)
            if not protected:
                candidates.append((s, p))
        candidates.sort()
        return {p for _, p in candidates[:count]}


@rule("streaming_llm", lambda budget: dict(n_sink=4))
def _recency(ref, r):
    return [float(p) for p in r.positions]


@rule("h2o", lambda budget: dict(window=budget // 2))
def _h2o(ref, r):
    return [r.received[p] / (r.t - p if ref.normalize == "mean" else 1) for p in r.positions]


@rule("tova")
def _tova(ref, r):
    return [r.rows[-1].get(p, 0.0) for p in r.positions]


@rule("knorm")
def _knorm(ref, r):  # norms rounded to 16 significant bits, so equal norms tie exactly
    return [-math.ldexp(round(m * 2**16) / 2**16, e) for m, e in (math.frexp(float(k.norm())) for k in r.keys)]


@rule("keydiff")
def _keydiff(ref, r):  # minus the cosine of each key with the mean of the unit keys
    unit = [k.double() / max(float(k.double().norm()), 1e-12) for k in r.keys]
    anchor = sum(unit) / len(unit)
    return [-float(u @ anchor) / max(float(anchor.norm()), 1e-8) for u in unit]


def _uniform(ref, r):
    return [float(hash_uniform(ref.seed, r.layer, r.head, r.t, p)) for p in r.positions]


rule("random")(_uniform)
rule("random_attention", lambda budget: dict(window=min(64, budget // 2), protect_prompt=True))(_uniform)


@rule("triattention", lambda budget: dict(group_agg="max"))
def _triattention(ref, r):
    competing = [
        not (p < ref.n_sink or p >= r.t - ref.window or (ref.protect_prompt and p < ref.prompt_len))
        for p in r.positions
    ]
    return triattention_scores(
        r.keys, r.positions, r.t, ref.stats, r.layer, r.head, ref.groups, competing, ref.group_agg
    )


def _window_mean(ref, r):
    """Mean attention of the last obs_window queries (fewer at the start) per position."""
    window = r.rows[-ref.obs_window :]
    return [sum(row.get(p, 0.0) for row in window) / min(r.t, ref.obs_window) for p in r.positions]


def _pooled(values, kernel, reduce):
    half, n = kernel // 2, len(values)
    return [reduce([values[j] for j in range(i - half, i + half + 1) if 0 <= j < n]) for i in range(n)]


@rule("snapkv", lambda budget: dict(obs_window=32, window="obs_window", kernel=5))
def _snapkv(ref, r):
    if ref.pool == "avg":  # zero padding at the ends, as avg_pool1d
        return _pooled(_window_mean(ref, r), ref.kernel, lambda v: sum(v) / ref.kernel)
    return _pooled(_window_mean(ref, r), ref.kernel, max)


@rule("rkv", lambda budget: dict(obs_window=8, window="obs_window", kernel=7))
def _rkv(ref, r):
    importance = _pooled(_window_mean(ref, r), ref.kernel, max)
    return [ref.lam * a - (1 - ref.lam) * d for a, d in zip(importance, _redundancy(ref, r.positions, r.keys))]


@rule("gkv", lambda budget: dict(obs_window=16, window="obs_window", lam=0.5, group_agg="max"))
def _gkv(ref, r):
    mean = _window_mean(ref, r)
    outside = [p < r.t - ref.window for p in r.positions]
    top = max(m for m, o in zip(mean, outside) if o)
    hist = ref.history.get((r.layer, r.head), {})
    global_score = [max(ref.alpha * hist.get(p, 0.0), m / top) for p, m in zip(r.positions, mean)]
    redundancy = _redundancy(ref, r.positions, r.keys)
    top = max(d for d, o in zip(redundancy, outside) if o)
    ref.history[(r.layer, r.head)] = {p: g for p, g, o in zip(r.positions, global_score, outside) if o}
    return [ref.lam * g - (1 - ref.lam) * d / top for g, d in zip(global_score, redundancy)]


def _redundancy(ref, positions, keys):
    n = len(positions)
    unit = [k / k.norm().clamp(min=1e-12) for k in keys.float()]
    # R-KV's cal_similarity: row i names its most recent near-duplicate d(i) and the entry
    # S[i][d(i)] is zeroed; token j's redundancy is the mean of column j
    sim = [[0.0 if i == j else float(unit[i] @ unit[j]) for j in range(n)] for i in range(n)]
    for i in range(n):
        dups = [j for j in range(n) if sim[i][j] > ref.threshold]
        if dups:
            sim[i][max(dups, key=lambda j: positions[j])] = 0.0
    redundancy_raw = [sum(sim[i][j] for i in range(n)) / n for j in range(n)]
    top = max(redundancy_raw)
    exp = [math.exp(x - top) for x in redundancy_raw]
    return [e / sum(exp) for e in exp]


@rule("vase", lambda budget: dict(n_sink=4, obs_window=32, window="obs_window", kernel=5, large_share=0.25))
def _vase(ref, resident):
    """VaSE's rule as sort keys, lowest evicted first: (1, -rank) for the floor(large_share * m)
    candidates of largest value range (m: entries older than the window; sinks' range +inf; ties
    to the older), (0, log p + Gumbel noise) for the others, p the window queries' attention
    renormalised over the m older entries, averaged, avg-pooled over them in position order."""
    positions, values, rows, t = resident.positions, resident.values, resident.rows, resident.t
    layer, head = resident.layer, resident.head
    outside = [p < t - ref.window for p in positions]
    candidate = [o and not (ref.protect_prompt and p < ref.prompt_len) for p, o in zip(positions, outside)]
    ranges = [math.inf if p < ref.n_sink else float(v.max() - v.min()) for p, v in zip(positions, values.float())]
    ranked = sorted((i for i in range(len(positions)) if candidate[i]), key=lambda i: (-ranges[i], positions[i]))
    n_large = math.floor(ref.large_share * sum(outside))
    rank = {i: r for r, i in enumerate(ranked) if r < n_large}
    older = [p for p, o in zip(positions, outside) if o]
    queries = [r for r in rows[-ref.obs_window :] if sum(r.get(p, 0.0) for p in older) > 0]
    attention = {p: sum(r.get(p, 0.0) / sum(r.get(o, 0.0) for o in older) for r in queries) / len(queries)
                 for p in older}  # fmt: skip
    half = ref.kernel // 2
    keys = []
    for i, p in enumerate(positions):
        if i in rank:
            keys.append((1, -rank[i]))
            continue
        if not outside[i]:
            keys.append((0, 0.0))  # the window: protected, never compared
            continue
        j = older.index(p)
        pooled = sum(attention[older[k]] for k in range(j - half, j + half + 1) if 0 <= k < len(older))
        u = min(max(float(hash_uniform(ref.seed, layer, head, t, p)), 2.0**-32), 1.0 - 2.0**-24)
        keys.append((0, math.log(pooled / ref.kernel) - math.log(-math.log(u)) if pooled > 0 else -math.inf))
    return keys


def triattention_scores(keys, positions, t, stats, layer, kv_head, group, competing, group_agg, offset_max=65536):
    """TriAttention's score as the authors' code computes it (pruning_utils.invert_rope,
    compute_frequency_statistics_from_means, score_keys_for_round with mean over geometric offsets,
    then TriAttention's per-head standardisation over the competing tokens and the per-(layer, KV head)
    combination of its query heads), in float64 loops: keys [n, D] post-RoPE at `positions`, the
    token at position t about to be generated."""
    n, d = keys.shape
    f = d // 2
    omega = [float(w) for w in stats.inv_freq]
    s = stats.attention_scaling
    offsets = [float(2**i) for i in range(int(math.log2(offset_max)) + 1)]
    per_head = []
    for qh in range(kv_head * group, (kv_head + 1) * group):
        q_mean = [complex(stats.q_mean[layer, qh, j]) for j in range(f)]
        q_abs = [float(stats.q_abs_mean[layer, qh, j]) for j in range(f)]
        raw = []
        for i in range(n):
            p = positions[i]
            k_rot = [float(x) for x in keys[i]]
            # invert_rope: base = k / s, cos_unit = cos(p w), k = base * cos_unit - rotate_half(base) * sin_unit
            k_pre = []
            for j in range(f):
                c, si = math.cos(p * omega[j]), math.sin(p * omega[j])
                re = k_rot[j] / s * c + k_rot[j + f] / s * si
                im = k_rot[j + f] / s * c - k_rot[j] / s * si
                k_pre.append(complex(re, im))
            amp = [abs(q_mean[j]) * abs(k_pre[j]) for j in range(f)]
            phi = [
                math.atan2((q_mean[j] * k_pre[j].conjugate()).imag, (q_mean[j] * k_pre[j].conjugate()).real)
                for j in range(f)
            ]
            extra = [(q_abs[j] - abs(q_mean[j])) * abs(k_pre[j]) for j in range(f)]
            scale = s * s  # freq_scale_sq
            trig = [sum(amp[j] * scale * math.cos((t - p + o) * omega[j] + phi[j]) for j in range(f)) for o in offsets]
            raw.append(sum(trig) / len(trig) + sum(extra[j] * scale for j in range(f)))
        pool = [r for r, c in zip(raw, competing) if c]
        mean = sum(pool) / max(len(pool), 1)
        std = math.sqrt(sum((r - mean) ** 2 for r in pool) / max(len(pool), 1))
        per_head.append([(r - mean) / max(std, 1e-6) for r in raw])
    combine = {"max": max, "sum": sum, "mean": lambda v: sum(v) / len(v)}[group_agg]
    return [combine([h[i] for h in per_head]) for i in range(n)]


def _attentions(out, groups, agg):
    """Per layer [H_kv, Q, K] fp32, the query heads of one KV head combined by `agg`."""
    result = []
    for a in out.attentions:
        a = a[0].float()
        a = a.view(a.shape[0] // groups, groups, *a.shape[1:])
        result.append({"mean": a.mean(dim=1), "max": a.amax(dim=1), "sum": a.sum(dim=1)}[agg])
    return result


@torch.inference_mode()
def reference_generate(model, prompt_ids, policy: ReferencePolicy, max_new_tokens):
    """Greedy tokens and the final resident positions [layer][head] under the policy."""
    config = model.config
    groups = config.num_attention_heads // config.num_key_value_heads
    layers, heads = config.num_hidden_layers, config.num_key_value_heads
    if policy.name == "triattention" and policy.stats is None:
        from kvexp.policies.triattention_stats import CalibrationSettings, load_or_calibrate

        policy.stats = load_or_calibrate(model, CalibrationSettings())  # calibration is tested on its own
    policy.groups = groups
    previous = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        ids = torch.tensor([prompt_ids])
        out = model(input_ids=ids, use_cache=True, output_attentions=True)
        cache = out.past_key_values
        prompt_len = t = len(prompt_ids)
        positions = [[list(range(t)) for _ in range(heads)] for _ in range(layers)]
        received = [[dict.fromkeys(range(t), 0.0) for _ in range(heads)] for _ in range(layers)]
        rows = [[[] for _ in range(heads)] for _ in range(layers)]

        def observe(attn):
            for layer in range(layers):
                for h in range(heads):
                    for q in range(attn[layer].shape[1]):
                        row = {p: float(attn[layer][h, q, i]) for i, p in enumerate(positions[layer][h])}
                        for p, v in row.items():
                            received[layer][h][p] += v
                        rows[layer][h].append(row)

        def prune(count):
            for layer in range(layers):
                keys, values = cache.layers[layer].keys, cache.layers[layer].values
                keep_idx = []
                for h in range(heads):
                    gone = policy.evict(
                        layer,
                        h,
                        positions[layer][h],
                        keys[0, h],
                        values[0, h],
                        received[layer][h],
                        rows[layer][h],
                        t,
                        prompt_len,
                        count,
                    )
                    keep = [i for i, p in enumerate(positions[layer][h]) if p not in gone]
                    positions[layer][h] = [positions[layer][h][i] for i in keep]
                    keep_idx.append(keep)
                index = torch.tensor(keep_idx).view(1, heads, -1, 1)
                cache.layers[layer].keys = keys.gather(2, index.expand(-1, -1, -1, keys.shape[-1]))
                cache.layers[layer].values = values.gather(2, index.expand(-1, -1, -1, values.shape[-1]))

        # prefill: causal rows over the prompt
        attn = _attentions(out, groups, policy.group_agg)
        for layer in range(layers):
            for h in range(heads):
                for q in range(t):
                    row = {p: float(attn[layer][h, q, p]) for p in range(q + 1)}
                    for p, v in row.items():
                        received[layer][h][p] += v
                    rows[layer][h].append(row)
        # cap: evict `slack` when an append would exceed the budget; interval: after every `slack`-th decode
        # step, cut to budget - slack (kvpress's DecodingPress), the prompt cut to that at prefill already
        room = policy.budget if policy.schedule == "cap" else policy.budget - policy.slack
        if t > room:
            prune(t - room)
        tokens = [int(out.logits[0, -1].argmax())]
        while len(tokens) < max_new_tokens:
            n, step = len(positions[0][0]), len(tokens)  # decode step `step` appends tokens[-1]
            if policy.schedule == "cap" and n + 1 > policy.budget:
                prune(policy.slack)
            if policy.schedule == "interval" and step > 1 and (step - 1) % policy.slack == 0 and n > room:
                prune(n - room)
            n = len(positions[0][0])
            out = model(
                input_ids=torch.tensor([[tokens[-1]]]),
                position_ids=torch.tensor([[t]]),
                attention_mask=torch.ones(1, n + 1, dtype=torch.long),
                past_key_values=cache,
                use_cache=True,
                output_attentions=True,
            )
            for layer in range(layers):
                for h in range(heads):
                    positions[layer][h].append(t)
                    received[layer][h][t] = 0.0
            observe(_attentions(out, groups, policy.group_agg))
            t += 1
            tokens.append(int(out.logits[0, -1].argmax()))
        return tokens, positions
    finally:
        config._attn_implementation = previous
