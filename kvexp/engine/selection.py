"""Which slots an eviction drops, given a policy's scores and protected mask: the engine's side of
eviction (a policy scores, the engine selects)."""

from __future__ import annotations

import torch
from torch import Tensor


def _eviction_key(score: Tensor, pos: Tensor, protected: Tensor) -> Tensor:
    """Scores as a sort key: finite, protected and empty slots last (+inf): an empty slot frees nothing, and a
    row cut below its capacity (the budget's interval schedule) has some."""
    key = torch.nan_to_num(score.float(), nan=0.0, posinf=3e38, neginf=-3e38)
    return key.masked_fill(protected | (pos < 0), float("inf"))


def eviction_order(score: Tensor, pos: Tensor, protected: Tensor) -> Tensor:
    """Slots [B, H, N] ordered from first to evict to last: evictable slots by ascending score with ties
    toward the older token, then empty and protected slots (empty first, then oldest first)."""
    key = _eviction_key(score, pos, protected)
    by_pos = torch.argsort(pos, dim=-1, stable=True)
    by_score = torch.argsort(key.gather(-1, by_pos), dim=-1, stable=True)
    return by_pos.gather(-1, by_score)


def lowest_slots(score: Tensor, pos: Tensor, protected: Tensor, count: int) -> Tensor:
    """The `count` slots [B, H, count] to evict first, in `eviction_order`'s order. A single
    eviction (slack 1, every step) takes a min instead of two sorts."""
    if count > 1:
        return eviction_order(score, pos, protected)[..., :count]
    key = _eviction_key(score, pos, protected)
    lowest = key == key.amin(dim=-1, keepdim=True)
    return torch.where(lowest, pos, torch.iinfo(pos.dtype).max).argmin(dim=-1, keepdim=True)
