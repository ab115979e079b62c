from kvexp.policies.base import Policy


class KNorm(Policy):
    """K-Norm (Devoto et al., 2024): keys with a low L2 norm draw more attention, so keep them."""

    name = "knorm"

    def score(self, state, view, ctx):
        return -view.keys.float().norm(dim=-1)
