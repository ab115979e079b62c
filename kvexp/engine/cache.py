"""The KV cache kvexp owns: preallocated per layer, written in place, one absolute position per
slot. Eviction frees slots (position -1) and the next appended token takes a free slot, so the
storage order is arbitrary and nothing is ever concatenated or compacted along the sequence.

Shapes: B rows, H KV heads, G query heads per KV head, N slots (capacity), D head dim, Q queries.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from kvexp.engine.selection import eviction_order, lowest_slots
from kvexp.policies.base import LayerView, Policy, StepContext

# prefill attention is computed in query chunks so its probability matrix stays under this size
PREFILL_CHUNK_BYTES = 64 * 2**20


def head_dim(model_config) -> int:
    """Per-head width: the config's own `head_dim` (Qwen3 sets it apart), else hidden / heads."""
    return getattr(model_config, "head_dim", None) or model_config.hidden_size // model_config.num_attention_heads


def grouped_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, scaling: float) -> tuple[Tensor, Tensor]:
    """Attention with grouped KV heads, returning the probabilities the policies score with.

    q [B, H, G, Q, D], k/v [B, H, N, D], allowed [B|1, H|1, Q|1, N] bool (every query allows >= 1 key).
    Returns out [B, H, G, Q, D] in v's dtype and probs [B, H, G, Q, N] fp32.
    The G query heads of a KV head are folded into the row axis, so both products are plain
    batched matmuls over [B, H] with no broadcast copies of K or V.
    """
    b, h, g, nq, d = q.shape
    logits = torch.matmul(q.reshape(b, h, g * nq, d), k.transpose(-1, -2)) * scaling  # [B, H, G*Q, N]
    if allowed.shape[-2] > 1:
        allowed = allowed.repeat(1, 1, g, 1)
    probs = torch.softmax(logits.float().masked_fill_(~allowed, float("-inf")), dim=-1)  # logits is ours
    out = torch.matmul(probs.to(v.dtype), v)  # [B, H, G*Q, D]
    return out.view(b, h, g, nq, d), probs.view(b, h, g, nq, -1)


class LayerCache:
    """One layer's resident entries and its policy state.

    k, v: [B, H, N, D]; pos: [B, H, N] int64 absolute position, -1 for an empty slot.
    """

    def __init__(
        self,
        batch: int,
        heads: int,
        capacity: int,
        head_dim: int,
        dtype,
        device,
        policy: Policy,
        budget: int | None,
        slack: int,
        layer_idx: int,
    ):
        self.k = torch.zeros(batch, heads, capacity, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.pos = torch.full((batch, heads, capacity), -1, dtype=torch.int64, device=device)
        self.policy, self.budget, self.slack, self.layer_idx = policy, budget, slack, layer_idx
        self.state = policy.init_state(batch, heads, capacity, device)

    @property
    def capacity(self) -> int:
        return self.pos.shape[-1]

    def view(self) -> LayerView:
        return LayerView(self.k, self.pos, self.v)

    def select_rows(self, rows: Tensor) -> None:
        self.k, self.v, self.pos = (t.index_select(0, rows) for t in (self.k, self.v, self.pos))
        self.state.select_rows(rows)

    # ---- decode ----
    def evict(self, ctx: StepContext) -> None:
        """Free `slack` slots in each row of ctx.evict_rows, lowest score first."""
        view = self.view()
        score = self.policy.score(self.state, view, ctx)
        protected = self.policy.protected_mask(self.pos, ctx, self.budget)
        slots = lowest_slots(score, self.pos, protected, self.slack)
        rows = None if ctx.evict_all else ctx.evict_rows
        if rows is None:
            self.pos.scatter_(-1, slots, -1)
        else:
            self.pos = torch.where(rows.view(-1, 1, 1), self.pos.scatter(-1, slots, -1), self.pos)
        self.state.clear_slots(slots, rows)

    def decode(self, q: Tensor, k_new: Tensor, v_new: Tensor, scaling: float, ctx: StepContext) -> Tensor:
        """q [B, H*G, 1, D], k_new/v_new [B, H, 1, D] -> attention output [B, 1, H*G, D]."""
        if ctx.evict_rows is not None:
            self.evict(ctx)
        b, h, _, d = self.k.shape
        n = ctx.slots_in_use or self.capacity
        # the full cache preallocates prompt + max_new_tokens: read only the slots filled so far
        k, v, pos = self.k[:, :, :n], self.v[:, :, :n], self.pos[:, :, :n]
        slot = (pos < 0).to(torch.int8).argmax(dim=-1, keepdim=True)  # [B, H, 1] first free slot
        k.scatter_(2, slot.unsqueeze(-1).expand(b, h, 1, d), k_new)
        v.scatter_(2, slot.unsqueeze(-1).expand(b, h, 1, d), v_new)
        pos.scatter_(2, slot, ctx.incoming.view(b, 1, 1).expand(b, h, 1))
        g = q.shape[1] // h
        resident = (pos >= 0).unsqueeze(2)  # [B, H, 1, N]
        if not self.policy.needs_attention:
            # nothing scores with the probabilities: let the fused kernel skip materialising them
            out = torch.nn.functional.scaled_dot_product_attention(
                q.view(b, h, g, d), k, v, attn_mask=resident, scale=scaling
            )  # [B, H, G, D]
            return out.reshape(b, h * g, 1, d).transpose(1, 2)
        out, probs = grouped_attention(q.view(b, h, g, 1, d), k, v, resident, scaling)
        probs = self.policy.aggregate_groups(probs)
        if n < self.capacity:
            probs = torch.nn.functional.pad(probs, (0, self.capacity - n))
        self.policy.observe(self.state, probs, ctx)
        return out.reshape(b, h * g, 1, d).transpose(1, 2)

    # ---- prefill ----
    def prefill(self, q: Tensor, k: Tensor, v: Tensor, scaling: float, ctx: StepContext) -> Tensor:
        """Prompts laid end to end (packed, no padding): q [1, H*G, T, D], k/v [1, H, T, D], prompt p
        being the next ctx.prompt_len[p] tokens. Each prompt attends to itself alone, exactly as if
        it were prefilled on its own, keeps at most `capacity` tokens by the policy's rule and is
        written to its cache row (ctx.prefill_rows) with fresh policy state. Returns [1, T, H*G, D]."""
        outs, start = [], 0
        for p, (row, length) in enumerate(ctx.prefill_rows):
            end = start + length
            outs.append(
                self._prefill_one(q[:, :, start:end], k[:, :, start:end], v[:, :, start:end], scaling, ctx.one(p), row)
            )
            start = end
        return torch.cat(outs, dim=2).transpose(1, 2)

    def _prefill_one(self, q: Tensor, k: Tensor, v: Tensor, scaling: float, ctx: StepContext, row: int) -> Tensor:
        """One prompt: q [1, H*G, L, D], k/v [1, H, L, D] -> attention output [1, H*G, L, D]."""
        _, h, length, d = k.shape
        g = q.shape[1] // h
        qg = q.view(1, h, g, length, d)
        idx = torch.arange(length, device=k.device)
        view = LayerView(k, idx.view(1, 1, -1).expand(1, h, length), v)
        state = self.policy.init_state(1, h, length, k.device)
        chunk = max(1, PREFILL_CHUNK_BYTES // max(1, h * g * length * 4))
        outs = []
        for start in range(0, length, chunk):
            queries = idx[start : start + chunk]
            causal = (idx.view(1, -1) <= queries.view(-1, 1)).view(1, 1, -1, length)  # [1, 1, c, L]
            out, probs = grouped_attention(qg[..., start : start + chunk, :], k, v, causal, scaling)
            outs.append(out)
            if self.policy.needs_attention:
                self.policy.observe(
                    state, self.policy.aggregate_groups(probs), replace(ctx, query_pos=queries.view(1, -1))
                )
        keep = self._prefill_keep(state, view, ctx)  # [1, H, K]
        kept = keep.shape[-1]
        self.k[row, :, :kept] = k[0].gather(1, keep[0].unsqueeze(-1).expand(h, kept, d))
        self.v[row, :, :kept] = v[0].gather(1, keep[0].unsqueeze(-1).expand(h, kept, d))
        self.pos[row] = torch.nn.functional.pad(keep[0], (0, self.capacity - kept), value=-1)  # index = position
        self.state.load_row(row, state.gather_slots(keep, self.capacity))
        return torch.cat(outs, dim=3).reshape(1, h * g, length, d)

    def _prefill_keep(self, state, view: LayerView, ctx: StepContext) -> Tensor:
        """Prompt indices [B, H, K] to keep (K = min(L, capacity)), in position order."""
        b, h, length = view.pos.shape
        if length <= self.capacity:
            return torch.arange(length, device=view.pos.device).view(1, 1, -1).expand(b, h, length)
        score = self.policy.score(state, view, ctx)
        protected = self.policy.protected_mask(view.pos, ctx, self.budget)
        keep = eviction_order(score, view.pos, protected)[..., length - self.capacity :]
        return keep.sort(dim=-1).values


class KVCache:
    """All layers of one batch. Transformers' attention modules call `update` (a pass-through: the
    new keys reach the attention function unchanged) and then the registered kvexp attention
    function, which hands them to `attend` with the step context the engine set."""

    def __init__(
        self, model_config, batch: int, capacity: int, dtype, device, policy: Policy, budget: int | None, slack: int
    ):
        heads = model_config.num_key_value_heads
        self.layers = [
            LayerCache(batch, heads, capacity, head_dim(model_config), dtype, device, policy, budget, slack, i)
            for i in range(model_config.num_hidden_layers)
        ]
        self.ctx: StepContext | None = None

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        return key_states, value_states

    def attend(self, layer_idx: int, q: Tensor, k: Tensor, v: Tensor, scaling: float) -> Tensor:
        layer = self.layers[layer_idx]
        self.ctx.layer_idx = layer_idx
        if self.ctx.prefill:
            return layer.prefill(q, k, v, scaling, self.ctx)
        return layer.decode(q, k, v, scaling, self.ctx)

    def select_rows(self, rows: Tensor) -> None:
        for layer in self.layers:
            layer.select_rows(rows)

    def resident_prompt_share(self, prompt_len: Tensor) -> Tensor:
        """[B] share of (prompt token, layer, head) entries still resident."""
        held = sum(
            ((layer.pos >= 0) & (layer.pos < prompt_len.view(-1, 1, 1))).sum(dim=(1, 2)) for layer in self.layers
        )
        heads = self.layers[0].pos.shape[1] * len(self.layers)
        return held.float() / (prompt_len.float() * heads).clamp(min=1)

    def prompt_kept(self, row: int, prompt_len: int) -> tuple[float, float]:
        """Prompt survival of one row, read once when it finishes: (share of its (prompt token, layer,
        KV head) entries still resident, share of its prompt tokens resident in at least one head of
        one layer). Positions below prompt_len are the prompt's."""
        pos = torch.stack([layer.pos[row] for layer in self.layers])  # [L, H, N]
        held = (pos >= 0) & (pos < prompt_len)
        present = torch.zeros(prompt_len + 1, dtype=torch.bool, device=pos.device)
        present[torch.where(held, pos, prompt_len).flatten()] = True  # index prompt_len: not a prompt token
        entries, tokens = torch.stack([held.sum(), present[:prompt_len].sum()]).tolist()  # one read-back
        return entries / (prompt_len * pos.shape[0] * pos.shape[1]), tokens / prompt_len

    def bytes_per_token(self) -> int:
        """K and V bytes one resident token costs across all layers and heads."""
        k = self.layers[0].k
        return 2 * len(self.layers) * k.shape[1] * k.shape[3] * k.element_size()
