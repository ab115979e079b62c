from kvexp.policies.base import Policy
from kvexp.policies.scoring import unit_keys


class KeyDiff(Policy):
    """KeyDiff (Park et al., 2025, arXiv 2504.15364): keep the keys that differ most from the others.

    As kvpress's KeyDiffPress computes it: the anchor is the mean of the unit-normalised keys, and a
    token's score is minus the cosine similarity of its key with the anchor, so keys pointing away
    from the average direction are kept. Per (row, layer, KV head) over the keys resident at the
    eviction (post-RoPE, as they sit in the cache); empty slots count neither in the anchor nor in the
    mean. No attention probabilities: it decodes through the fused attention path.

    Defaults: window 0 and no sinks, as KeyDiffPress protects nothing. The anchor is taken over the
    tokens resident at each eviction, the one whose append triggered it not yet written. kvpress's
    DecodingPress(KeyDiffPress, target_size=T, compression_interval=S) scores the T + S tokens resident
    after every S-th decode step: that is kvexp's `budget.tokens=T+S budget.slack=S
    budget.schedule=interval`, the same steps and the same sets for a prompt of at most T tokens (a
    longer one is compressed to T at prefill here, where DecodingPress lets the cache run over T + S until
    step S). Under the default `cap` schedule the same B and S evict at the same steps only when T minus
    the prompt length is a non-negative multiple of S. The paper's block-wise prefill (kvpress's
    BlockPress) is not reproduced: a prompt longer than B is compressed in one selection over the whole
    prompt.
    """

    name = "keydiff"

    def score(self, state, view, ctx):
        valid = (view.pos >= 0).unsqueeze(-1)
        unit = unit_keys(view.keys, view.pos)
        anchor = unit.sum(dim=-2, keepdim=True) / valid.sum(dim=-2, keepdim=True).clamp(min=1)
        # cosine(unit, anchor) = unit . anchor / |anchor|, unit already has norm 1 (or is zero)
        cosine = (unit @ anchor.transpose(-1, -2)).squeeze(-1) / anchor.norm(dim=-1).clamp(min=1e-8)
        return -cosine

    def eviction_workspace_bytes(self, heads, query_heads, n_slots, head_dim):
        # per row: the fp32 keys and their unit copy on top of the shared score and order
        per_row, shared = super().eviction_workspace_bytes(heads, query_heads, n_slots, head_dim)
        return per_row + heads * n_slots * head_dim * 4 * 2, shared
