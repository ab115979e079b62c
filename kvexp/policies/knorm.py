import torch

from kvexp.policies.base import Policy

# significant bits kept of a key norm: the keys of one token at several positions have equal norms
# (RoPE rotates, never scales), yet differ in their last bits with the shape of the batch's matrix
# products; rounded, such ties stay ties and go to the older token whatever shared the batch.
# Best effort: two norms whose last-bit noise straddles a rounding boundary still round apart (rare:
# the noise is ~2^-23 against a 2^-16 grid). Scores of other policies are not rounded; their ties
# between equal keys are rare because they mix in attention or positions.
_NORM_BITS = 16


class KNorm(Policy):
    """K-Norm (Devoto et al., 2024): keys with a low L2 norm draw more attention, so keep them."""

    name = "knorm"

    def score(self, state, view, ctx):
        mantissa, exponent = torch.frexp(view.keys.float().norm(dim=-1))
        return -torch.ldexp(torch.round(mantissa * 2**_NORM_BITS) / 2**_NORM_BITS, exponent)
