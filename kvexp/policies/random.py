import torch

from kvexp.policies.base import LayerView, Policy, StepContext

_M31 = 0x7FFFFFFF


def hash_uniform(*parts: torch.Tensor | int) -> torch.Tensor:
    """A counter-based hash of integer tensors to uniform floats in [0, 1). Stateless, so a row's
    draws depend only on its own seed, never on the batch it shares or on the order of calls."""
    device = next((p.device for p in parts if isinstance(p, torch.Tensor)), None)
    x = torch.zeros((), dtype=torch.int64, device=device)
    for i, p in enumerate(parts):
        p = torch.as_tensor(p, dtype=torch.int64, device=device) & _M31
        x = (x * 0x5BD1E995 + p * (0x27D4EB2F + 2 * i) + 0x165667B1) & _M31
        x = ((x ^ (x >> 15)) * 0x2C1B3C6D) & _M31
        x = ((x ^ (x >> 12)) * 0x297A2D39) & _M31
        x = x ^ (x >> 15)
    return x.to(torch.float32) / float(_M31 + 1)


def eviction_draws(view: LayerView, ctx: StepContext) -> torch.Tensor:
    """[B, H, N] uniform draws in [0, 1], independent per (problem and sample's seed, layer, KV head,
    step, position): a fresh draw for every resident entry at every eviction, the same whatever the
    batch or the storage order."""
    b, h, _ = view.pos.shape
    seed = ctx.row_seed.view(b, 1, 1)
    head = torch.arange(h, device=view.pos.device).view(1, h, 1)
    step = ctx.incoming.view(b, 1, 1)
    return hash_uniform(seed, ctx.layer_idx, head, step, view.pos)


class Random(Policy):
    """Uniformly random eviction, seeded per (problem, sample), layer, head and step: the floor any
    informed policy must beat."""

    name = "random"

    def score(self, state, view, ctx):
        return eviction_draws(view, ctx)
