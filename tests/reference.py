"""A plain per-step reference for every policy, written without kvexp's machinery: transformers' own
DynamicCache and eager attention (the model returns its attention weights), pruned after every step
by the policy's rule with Python loops over (layer, head, position). Only random's hash is shared,
because that hash *is* the draws of random's rule (and of random_attention's and VaSE's)."""

from __future__ import annotations

import math

import torch

from kvexp.policies.random import hash_uniform


class ReferencePolicy:
    def __init__(
        self,
        name,
        budget,
        slack,
        *,
        window=None,
        n_sink=None,
        protect_prompt=None,
        normalize="sum",
        obs_window=None,
        kernel=None,
        lam=None,
        threshold=0.5,
        seed=0,
        group_agg=None,
        pool="avg",
        alpha=0.8,
        stats=None,
        large_share=None,
    ):
        self.name, self.budget, self.slack = name, budget, slack
        defaults = {
            "streaming_llm": dict(n_sink=4, window=0),
            "h2o": dict(n_sink=0, window=budget // 2),
            "snapkv": dict(n_sink=0, obs_window=32, kernel=5),
            "rkv": dict(n_sink=0, obs_window=8, kernel=7),
            "gkv": dict(n_sink=0, obs_window=16, kernel=1, lam=0.5, group_agg="max"),
            "triattention": dict(group_agg="max"),
            "random_attention": dict(window=min(64, budget // 2), protect_prompt=True),
            "vase": dict(n_sink=4, obs_window=32, kernel=5, large_share=0.25),
        }
        d = defaults.get(name, {})
        self.n_sink = n_sink if n_sink is not None else d.get("n_sink", 0)
        self.obs_window = obs_window if obs_window is not None else d.get("obs_window", 0)
        self.kernel = kernel if kernel is not None else d.get("kernel", 1)
        default_window = self.obs_window if name in ("snapkv", "rkv", "gkv", "vase") else d.get("window", 0)
        self.window = window if window is not None else default_window
        self.protect_prompt = protect_prompt if protect_prompt is not None else d.get("protect_prompt", False)
        self.normalize, self.threshold, self.seed = normalize, threshold, seed
        self.large_share = large_share if large_share is not None else d.get("large_share")
        self.lam = lam if lam is not None else d.get("lam", 0.1)
        self.group_agg = group_agg or d.get("group_agg", "mean")
        self.pool, self.alpha = pool, alpha
        self.history = {}  # gkv: (layer, head) -> {position: global score at the last eviction it survived}
        self.stats = stats  # triattention: its calibrated query statistics (set by reference_generate if None)
        self.prompt_len = 0

    # one (layer, head): positions ascending, keys and values [n, D], received {pos: float}, rows [{pos: prob}]
    def scores(self, layer, head, positions, keys, values, received, rows, t):
        n = len(positions)
        if self.name == "streaming_llm":
            return [float(p) for p in positions]
        if self.name == "h2o":
            return [received[p] / (t - p if self.normalize == "mean" else 1) for p in positions]
        if self.name == "tova":
            return [rows[-1].get(p, 0.0) for p in positions]
        if self.name == "knorm":  # norms rounded to 16 significant bits, so equal norms tie exactly
            return [-math.ldexp(round(m * 2**16) / 2**16, e) for m, e in (math.frexp(float(k.norm())) for k in keys)]
        if self.name == "keydiff":  # minus the cosine of each key with the mean of the unit keys
            unit = [k.double() / max(float(k.double().norm()), 1e-12) for k in keys]
            anchor = sum(unit) / n
            return [-float(u @ anchor) / max(float(anchor.norm()), 1e-8) for u in unit]
        if self.name in ("random", "random_attention"):
            return [float(hash_uniform(self.seed, layer, head, t, p)) for p in positions]
        if self.name == "vase":
            return self.vase_keys(layer, head, positions, values, rows, t)
        if self.name == "triattention":
            competing = [
                not (p < self.n_sink or p >= t - self.window or (self.protect_prompt and p < self.prompt_len))
                for p in positions
            ]
            return triattention_scores(
                keys, positions, t, self.stats, layer, head, self.groups, competing, self.group_agg
            )
        window = rows[-self.obs_window :]
        mean = [sum(r.get(p, 0.0) for r in window) / min(t, self.obs_window) for p in positions]
        half = self.kernel // 2
        if self.name == "snapkv" and self.pool == "avg":  # zero padding at the ends, as avg_pool1d
            return [sum(mean[j] for j in range(i - half, i + half + 1) if 0 <= j < n) / self.kernel for i in range(n)]
        if self.name == "snapkv":
            return [max(mean[j] for j in range(i - half, i + half + 1) if 0 <= j < n) for i in range(n)]
        if self.name == "gkv":
            outside = [p < t - self.window for p in positions]
            top = max(m for m, o in zip(mean, outside) if o)
            hist = self.history.get((layer, head), {})
            global_score = [max(self.alpha * hist.get(p, 0.0), m / top) for p, m in zip(positions, mean)]
            redundancy = self.redundancy(positions, keys)
            top = max(r for r, o in zip(redundancy, outside) if o)
            self.history[(layer, head)] = {p: g for p, g, o in zip(positions, global_score, outside) if o}
            return [self.lam * g - (1 - self.lam) * r / top for g, r in zip(global_score, redundancy)]
        assert self.name == "rkv"
        importance = [max(mean[j] for j in range(i - half, i + half + 1) if 0 <= j < n) for i in range(n)]
        redundancy = self.redundancy(positions, keys)
        return [self.lam * a - (1 - self.lam) * r for a, r in zip(importance, redundancy)]

    def redundancy(self, positions, keys):
        n = len(positions)
        unit = [k / k.norm().clamp(min=1e-12) for k in keys.float()]
        # R-KV's cal_similarity: row i names its most recent near-duplicate d(i) and the entry
        # S[i][d(i)] is zeroed; token j's redundancy is the mean of column j
        sim = [[0.0 if i == j else float(unit[i] @ unit[j]) for j in range(n)] for i in range(n)]
        for i in range(n):
            dups = [j for j in range(n) if sim[i][j] > self.threshold]
            if dups:
                sim[i][max(dups, key=lambda j: positions[j])] = 0.0
        redundancy_raw = [sum(sim[i][j] for i in range(n)) / n for j in range(n)]
        top = max(redundancy_raw)
        exp = [math.exp(r - top) for r in redundancy_raw]
        return [e / sum(exp) for e in exp]

    def vase_keys(self, layer, head, positions, values, rows, t):
        """VaSE's rule as sort keys, lowest evicted first: (1, -rank) for the floor(large_share * m)
        candidates of largest value range (m: entries older than the window; sinks' range +inf; ties
        to the older), (0, log p + Gumbel noise) for the others, p the window queries' attention
        renormalised over the m older entries, averaged, avg-pooled over them in position order."""
        outside = [p < t - self.window for p in positions]
        candidate = [o and not (self.protect_prompt and p < self.prompt_len) for p, o in zip(positions, outside)]
        ranges = [math.inf if p < self.n_sink else float(v.max() - v.min()) for p, v in zip(positions, values.float())]
        ranked = sorted((i for i in range(len(positions)) if candidate[i]), key=lambda i: (-ranges[i], positions[i]))
        n_large = math.floor(self.large_share * sum(outside))
        rank = {i: r for r, i in enumerate(ranked) if r < n_large}
        older = [p for p, o in zip(positions, outside) if o]
        queries = [r for r in rows[-self.obs_window :] if sum(r.get(p, 0.0) for p in older) > 0]
        attention = {p: sum(r.get(p, 0.0) / sum(r.get(o, 0.0) for o in older) for r in queries) / len(queries)
                     for p in older}  # fmt: skip
        half = self.kernel // 2
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
            u = min(max(float(hash_uniform(self.seed, layer, head, t, p)), 2.0**-32), 1.0 - 2.0**-24)
            keys.append((0, math.log(pooled / self.kernel) - math.log(-math.log(u)) if pooled > 0 else -math.inf))
        return keys

    def evict(self, layer, head, positions, keys, values, received, rows, t, prompt_len, count):
        self.prompt_len = prompt_len
        scores = self.scores(layer, head, positions, keys, values, received, rows, t)
        candidates = []
        for p, s in zip(positions, scores):
            protected = p < self.n_sink or p >= t - self.window or (self.protect_prompt and p < prompt_len)
            if not protected:
                candidates.append((s, p))
        candidates.sort()
        return {p for _, p in candidates[:count]}


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
        if t > policy.budget:
            prune(t - policy.budget)
            policy.history.clear()  # G-KV: a prompt compressed at prefill starts no history
        tokens = [int(out.logits[0, -1].argmax())]
        while len(tokens) < max_new_tokens:
            if len(positions[0][0]) + 1 > policy.budget:
                prune(policy.slack)
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
