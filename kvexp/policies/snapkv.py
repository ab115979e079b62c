from kvexp.policies.base import Policy, PolicyState
from kvexp.policies.scoring import QueryWindow, pool_along_positions


class SnapKV(Policy):
    """SnapKV-D: SnapKV (Li et al., 2024) applied during decoding. At every eviction, tokens are
    scored by the attention of the last `obs_window` real queries (post-RoPE, as the model really
    attended), averaged and pooled along positions; the window's own tokens are protected."""

    name = "snapkv"
    needs_attention = True

    def __init__(self, *, obs_window: int = 32, kernel: int = 5, pool: str = "avg", **kw):
        super().__init__(**kw)
        self.obs_window = obs_window
        self.kernel = kernel
        self.pool = pool
        self.queries = QueryWindow(obs_window)

    def default_window(self, budget):
        return self.obs_window

    def init_state(self, batch, heads, n_slots, device):
        state = PolicyState()
        self.queries.init(state, batch, heads, n_slots, device)
        return state

    def observe(self, state, probs, ctx):
        self.queries.push(state, probs, ctx)

    def score(self, state, view, ctx):
        return pool_along_positions(self.queries.mean(state, ctx), view.pos, self.kernel, self.pool)
