import torch

from kvexp.errors import ConfigError
from kvexp.policies.base import Policy, PolicyState


class H2O(Policy):
    """Heavy-Hitter Oracle (Zhang et al., 2023): attention each token has received, accumulated in
    fp32 over every query since it entered, per layer and KV head. `normalize: mean` divides by the
    number of queries that saw the token (the reference study's variant), `sum` is H2O's own.
    The recent window defaults to half the budget, as in H2O."""

    name = "h2o"
    needs_attention = True

    def __init__(self, *, normalize: str = "sum", **kw):
        super().__init__(**kw)
        if normalize not in ("sum", "mean"):
            raise ConfigError(f"h2o normalize must be 'sum' or 'mean', got {normalize!r}")
        self.normalize = normalize

    def default_window(self, budget):
        return budget // 2

    def init_state(self, batch, heads, n_slots, device):
        return PolicyState({"received": torch.zeros(batch, heads, n_slots, device=device)})

    def observe(self, state, probs, ctx):
        state["received"] += probs.squeeze(-2) if probs.shape[-2] == 1 else probs.sum(dim=-2)

    def score(self, state, view, ctx):
        if self.normalize == "sum":
            return state["received"]
        # queries at positions pos .. incoming-1 have seen the token
        seen = (ctx.incoming.view(-1, 1, 1) - view.pos).clamp(min=1).float()
        return state["received"] / seen
