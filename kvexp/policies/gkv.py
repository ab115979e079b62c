import torch

from kvexp.errors import ConfigError
from kvexp.policies.rkv import RKV


class GKV(RKV):
    """G-KV (microsoft/G-KV, 2025): a global score, local attention combined with the score each token
    carried out of earlier evictions, minus R-KV's redundancy; the optional post-training is not part
    of it.

    As G-KV's `ScoreBasedKV.update_kv` computes it with the settings of its G-KV recipe
    (`--suppressing_redundancy --mix_lambda 0.5 --enable_score_cache --alpha 0.8`, smoothing `max`):
    local = mean attention of the last `obs_window` queries, divided by its maximum over the tokens
    outside that window; global = max(alpha * history, local), where history is the global score
    the token was given at the previous eviction it survived (none, i.e. 0, for a token not yet
    scored or one that sat in the window then); redundancy = R-KV's (`RKV.redundancy`, as G-KV's
    `cal_similarity_triton`) divided by its maximum outside the window; score = lam * global
    - (1 - lam) * redundancy. Each eviction stores global as the new history of the tokens outside the
    window; evicted slots lose theirs.

    Defaults as the recipe: lam 0.5, alpha 0.8, obs_window 16 (protected, as G-KV keeps the window's
    tokens whole), threshold 0.5, group_agg max (G-KV max-pools the query heads of a KV head).
    A prompt longer than the budget is compressed at prefill by the same score, and its kept tokens
    start with their global scores as history: G-KV calls `update_kv` on the prefill forward too
    (`gkv/model/gen_patch.py` 177-179: `output_length` is 0 there, so `enable_compress` holds;
    `modeling_llama.py` 186-210 stores the returned score cache), and `update_kv` returns the kept
    tokens' global scores as `new_cached_score` (`score_based.py` 206-221), which its next compression
    reads as `old_score` (131-151).

    Differences kvexp's semantics force: the local attention is the rows the window's queries really
    paid at their own steps (as SnapKV-D and R-KV here), where G-KV recomputes those queries against
    the cache at the eviction. G-KV compresses every `divide_length` decode steps down to its budget b
    (`gen_patch.py` 178), and a prompt longer than b at prefill: that is kvexp's
    `budget.schedule=interval` with B = b + divide_length, S = divide_length. Under the default `cap`
    schedule the same B and S evict when an append would exceed B instead, which is the same steps only
    when (b - prompt length) is a non-negative multiple of S, and a prompt is compressed at prefill only
    when it is longer than B.
    """

    name = "gkv"

    def __init__(
        self,
        *,
        lam: float = 0.5,
        alpha: float = 0.8,
        obs_window: int = 16,
        threshold: float = 0.5,
        group_agg: str = "max",
        **kw,
    ):
        super().__init__(lam=lam, obs_window=obs_window, kernel=1, threshold=threshold, group_agg=group_agg, **kw)
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"gkv alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha

    def init_state(self, batch, heads, n_slots, device):
        state = super().init_state(batch, heads, n_slots, device)
        state["history"] = torch.zeros(batch, heads, n_slots, device=device)
        return state

    def score(self, state, view, ctx):
        window = self.recent_window(ctx.budget)
        scored = (view.pos >= 0) & (view.pos < ctx.incoming.view(-1, 1, 1) - window)

        def by_max_outside_window(x):
            top = x.masked_fill(~scored, float("-inf")).amax(dim=-1, keepdim=True)
            return x / top.clamp(min=torch.finfo(torch.float32).tiny)

        local = by_max_outside_window(self.queries.mean(state, ctx))
        global_score = torch.maximum(self.alpha * state["history"], local)
        redundancy = by_max_outside_window(self.redundancy(view.keys, view.pos))
        # the history G-KV caches: the global score of the tokens outside the window, in evicting rows (a
        # prompt compressed at prefill included: its kept tokens carry their scores into the first eviction)
        state.set_where_evicting("history", torch.where(scored, global_score, 0.0), ctx)
        return self.lam * global_score - (1.0 - self.lam) * redundancy
