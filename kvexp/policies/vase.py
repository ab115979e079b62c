import torch

from kvexp.errors import ConfigError
from kvexp.policies.random import eviction_draws
from kvexp.policies.scoring import WindowedQueriesPolicy, pool_along_positions, position_sorted

# Scores of the value-range entries: above any log-probability plus Gumbel noise (at most about 17
# for the clamped draws) and exact integers in fp32 for any rank below 2**23.
_LIFT = 1e7
# uniform draws are clamped into the open interval, so the Gumbel noise stays finite
_DRAW_MIN, _DRAW_MAX = 2.0**-32, 1.0 - 2.0**-24


class VaSE(WindowedQueriesPolicy):
    """VaSE (terarachang/VaSE, mode `range_sink_sample_attn`): keep the entries with the largest value
    range, fill the rest by sampling in proportion to a SnapKV-style attention score.

    As their `eval/reasoning_tasks/modified/transformers/cache_utils.py` (commit bfa2692) does it, at
    a compression:
    - L185-190: the candidates are every entry but the newest `residual_length` (64), the buffer
      since the last compression, kept whole (the protected window here, `obs_window`).
    - L194-201: value range = max - min of the value vector over the head dim, +inf for the first
      `n_sink` (4, L55) entries; L215: the `n_large` candidates with the largest range are kept.
    - L143-168, L204-205: the attention score of a candidate is the softmax of the last 64 post-RoPE
      queries (the buffer's own, L104-122) over the candidates, averaged over those queries, avg-pooled
      (kernel 5, `--smooth`), averaged over the query heads of the KV head.
    - L217-219, L179-183: the large entries' scores are set to 0 and the rest of the kept candidates
      (`token_budget` - 64 - n_large) are drawn by `torch.multinomial(score, ..., replacement=False)`;
      L259-271: the cache keeps them and the buffer, `token_budget` entries.

    Sampling as a score: torch's multinomial without replacement is the top-k of p / q, q ~ Exp(1)
    (aten/src/ATen/native/Distributions.cpp: "The algorithm is from gumbel softmax"), i.e. the top-k of
    log p + Gumbel noise, which is sequential sampling without replacement in proportion to p. The
    score here is log p - log(-log u) for a uniform u of `random`'s seeded draws
    (`eviction_draws`), and kvexp evicts the lowest scores, so the kept set has their distribution.
    The value-range entries score above every sampled one, ordered by range, so they are evicted
    last. Their regime (`--token_budget K --residual_length 64`, `n_large` K/4 in their scripts and
    Random Attention's) is `budget.tokens=K+64 budget.slack=64 policy.obs_window=64` here, with
    `large_share` 0.25 of the entries outside the window (K of them at a compression) as n_large.

    Differences from their code:
    - The window (queries and protected tokens) is 32 by default, SnapKV-D's, where theirs is 64:
      kvexp keeps the window's attention rows (obs_window x N fp32 per KV head), half the size of a
      bf16 KV cache of head dim 128 at 64; `policy.obs_window=64` is theirs.
    - The draws are hashes of (problem and sample seed, layer, KV head, step, position), clamped into
      [2^-32, 1 - 2^-24] before the Gumbel transform; theirs come from the process's unseeded global
      generator, shared by the batch. Same distribution but for those clamped tails.
    - The attention rows are those the window's queries really paid at their own steps (SnapKV-D's
      QueryWindow), restricted to the candidates and renormalised per query: every candidate is
      older than every window query, so each query saw them all and this is their softmax over the
      candidates (a pinned prompt included, as in `vase_pp`), except that the
      query heads of a KV head are combined (`group_agg`, mean) before renormalising where theirs
      renormalise each head and then average.
    - The pooling runs along positions over the candidates; theirs runs in storage order, which after
      a compression is the order of the kept ids (largest ranges, then draws), not positions.
      Random Attention's port of VaSE sorts the kept ids by position first, as here.
    - n_large is a share of the entries outside the window at each eviction (K/4 at theirs); under
      kvexp's default slack 1 it is recomputed at every step. The range is the difference of the
      extremes in fp32 (theirs subtracts in the model's dtype, bf16 on their runs, which rounds it);
      ties in range go to the older token.
    - The sinks are the first `n_sink` positions, also protected outright; theirs are the first 4
      slots, which hold the same tokens (their range is +inf, so they lead every compacted cache).
    - A candidate of zero attention is evicted first; theirs raises if fewer candidates have
      non-zero weight than it draws. With `protect_prompt=true` the prompt is pinned and leaves both
      pools, as Random Attention's `vase_pp`, and a prompt that does not fit is an error row. A
      prompt longer than B is compressed at prefill by the same rule; theirs never compresses there.
    """

    name = "vase"

    def __init__(self, *, large_share: float = 0.25, obs_window: int = 32, kernel: int = 5, n_sink: int = 4, **kw):
        super().__init__(obs_window=obs_window, n_sink=n_sink, **kw)
        if not 0.0 <= large_share <= 1.0:
            raise ConfigError(f"vase large_share must be in [0, 1], got {large_share}")
        self.large_share = large_share
        self.kernel = kernel

    def eviction_workspace_bytes(self, heads, query_heads, n_slots, head_dim):
        # beyond the default's score and sorts: about a dozen more fp32/int64 [H, N] tensors live at
        # once (the range and its ranks, the renormalised and pooled attention, the draws)
        per_row, shared = super().eviction_workspace_bytes(heads, query_heads, n_slots, head_dim)
        return per_row + heads * n_slots * 12 * 8, shared

    def candidate_attention(self, state, outside: torch.Tensor) -> torch.Tensor:
        """[B, H, N]: each window query's attention over the entries `outside` [B, H, N] bool (those
        older than the window), renormalised over them, averaged over the queries that have run."""
        recent = state["recent"]  # [B, H, W, N]
        mask = outside.to(recent.dtype)
        mass = torch.einsum("bhwn,bhn->bhw", recent, mask)
        ran = (mass > 0).sum(dim=-1, keepdim=True).clamp(min=1)
        inverse = torch.where(mass > 0, 1.0 / mass.clamp(min=torch.finfo(recent.dtype).tiny), 0.0)
        return torch.einsum("bhwn,bhw->bhn", recent, inverse) * mask / ran

    def score(self, state, view, ctx):
        if view.values is None:
            raise ValueError("vase scores by the value vectors: the layer view must carry them")
        pos = view.pos
        outside = (pos >= 0) & (pos < ctx.incoming.view(-1, 1, 1) - self.recent_window(0))
        candidates = outside & (pos >= ctx.prompt_len.view(-1, 1, 1)) if self.protect_prompt else outside
        n_large = torch.floor(outside.sum(dim=-1, keepdim=True) * self.large_share)  # [B, H, 1]

        # the extremes are elements of the values, exact in any dtype: only their difference is fp32
        value_range = view.values.amax(dim=-1).float() - view.values.amin(dim=-1).float()
        value_range = value_range.masked_fill(pos < self.n_sink, float("inf"))
        value_range = value_range.masked_fill(~candidates, float("-inf"))  # ranks count candidates only
        by_pos = position_sorted(pos)  # so that equal ranges rank the older first
        order = by_pos.gather(-1, torch.argsort(-value_range.gather(-1, by_pos), dim=-1, stable=True))
        rank = torch.empty_like(order).scatter_(
            -1, order, torch.arange(pos.shape[-1], device=pos.device).expand_as(order)
        )
        large = candidates & (rank < n_large)

        # as theirs, the softmax and the pooling run over every entry outside the window (a pinned
        # prompt and the large entries included); only the others are drawn from
        weights = self.candidate_attention(state, outside)
        pooled = pool_along_positions(weights, torch.where(outside, pos, -1), self.kernel, "avg")
        draws = eviction_draws(view, ctx).clamp(_DRAW_MIN, _DRAW_MAX)
        sampled = torch.log(pooled) - torch.log(-torch.log(draws))
        return torch.where(large, _LIFT - rank.float(), sampled)
