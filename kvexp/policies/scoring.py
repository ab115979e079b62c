"""Scoring helpers that several policies share: rules along the sequence (position order, pooling over
resident tokens) and the window of recent queries whose attention SnapKV-D, R-KV and G-KV score by."""

from __future__ import annotations

import torch
from torch import Tensor

from kvexp.errors import ConfigError
from kvexp.policies.base import Policy, PolicyState, StepContext


def position_sorted(pos: Tensor) -> Tensor:
    """Slot indices [B, H, N] in ascending position with empty slots last, so that rules defined
    along the sequence (pooling, 'most recent duplicate') never depend on storage order."""
    key = torch.where(pos < 0, torch.iinfo(pos.dtype).max, pos)
    return torch.argsort(key, dim=-1, stable=True)


def unit_keys(keys: Tensor, pos: Tensor) -> Tensor:
    """[B, H, N, D] keys scaled to unit length in fp32 (F.normalize's eps), empty slots (stale keys,
    padding) zero, for cosine similarities over resident tokens."""
    keys = keys.float()
    return keys / keys.norm(dim=-1, keepdim=True).clamp(min=1e-12) * (pos >= 0).unsqueeze(-1)


def pool_along_positions(values: Tensor, pos: Tensor, kernel: int, mode: str) -> Tensor:
    """1-D pooling (avg or max, stride 1, 'same' padding) of [B, H, N] values over resident
    tokens taken in position order; empty slots neither contribute nor receive."""
    if kernel <= 1:
        return values
    order = position_sorted(pos)
    v = values.gather(-1, order)
    valid = pos.gather(-1, order) >= 0
    flat = v.reshape(-1, 1, v.shape[-1])
    if mode == "avg":
        pooled = torch.nn.functional.avg_pool1d(
            flat.masked_fill(~valid.reshape(flat.shape), 0.0), kernel, stride=1, padding=kernel // 2
        )
    elif mode == "max":
        pooled = torch.nn.functional.max_pool1d(
            flat.masked_fill(~valid.reshape(flat.shape), float("-inf")), kernel, stride=1, padding=kernel // 2
        )
    else:
        raise ConfigError(f"pool must be 'avg' or 'max', got {mode!r}")
    pooled = pooled.reshape(v.shape)
    return torch.empty_like(values).scatter(-1, order, pooled)


class QueryWindow:
    """Ring buffer of the attention rows of the last `size` queries ([B, H, size, N] in the state
    as 'recent'), the observation window of SnapKV-D and R-KV: real queries of the last steps,
    so the window is re-scored at every eviction rather than fixed at prefill.

    The query at position p sits in row (p - max(prompt_len - size, 0)) mod size of its own batch
    row, so each sequence's window depends only on its own positions: rows enter the batch at
    different steps (continuous batching)."""

    def __init__(self, size: int):
        if size < 1:
            raise ConfigError(f"obs_window must be >= 1, got {size}")
        self.size = size

    def init(self, state: PolicyState, batch: int, heads: int, n_slots: int, device) -> None:
        state["recent"] = torch.zeros(batch, heads, self.size, n_slots, device=device)

    def push(self, state: PolicyState, probs: Tensor, ctx: StepContext) -> None:
        """probs [B, H, Q, N] of the queries at ctx.query_pos [B, Q] (consecutive per row)."""
        take = min(probs.shape[-2], self.size)  # older queries would be overwritten anyway
        probs, qpos = probs[..., -take:, :], ctx.query_pos[:, -take:]
        offset = (ctx.prompt_len - self.size).clamp(min=0).view(-1, 1)
        ring_row = torch.remainder(qpos - offset, self.size)  # [B, take], distinct per row
        b, h, _, n = probs.shape
        state["recent"].scatter_(-2, ring_row.view(b, 1, take, 1).expand(b, h, take, n), probs)

    def mean(self, state: PolicyState, ctx: StepContext) -> Tensor:
        """[B, H, N]: mean attention over the window's queries (those that exist yet)."""
        seen = ctx.incoming.clamp(min=1, max=self.size).to(torch.float32)
        return state["recent"].sum(dim=-2) / seen.view(-1, 1, 1)


class WindowedQueriesPolicy(Policy):
    """A policy that scores by the attention of its last `obs_window` real queries (SnapKV-D, R-KV,
    G-KV): it keeps them in a QueryWindow, one per layer, and protects the window's own tokens."""

    needs_attention = True

    def __init__(self, *, obs_window: int, **kw):
        super().__init__(**kw)
        self.obs_window = obs_window
        self.queries = QueryWindow(obs_window)

    def default_window(self, budget):
        return self.obs_window

    def init_state(self, batch, heads, n_slots, device):
        state = PolicyState()
        self.queries.init(state, batch, heads, n_slots, device)
        return state

    def observe(self, state, probs, ctx):
        self.queries.push(state, probs, ctx)
