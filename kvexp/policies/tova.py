import torch

from kvexp.policies.base import Policy, PolicyState


class TOVA(Policy):
    """TOVA (Oren et al., 2024): keep the tokens the current (most recent) query attends to most."""

    name = "tova"
    needs_attention = True

    def init_state(self, batch, heads, n_slots, device):
        return PolicyState({"last": torch.zeros(batch, heads, n_slots, device=device)})

    def observe(self, state, probs, ctx):
        state["last"] = probs[..., -1, :].clone()

    def score(self, state, view, ctx):
        return state["last"]
