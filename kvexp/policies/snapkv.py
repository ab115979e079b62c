from kvexp.policies.scoring import WindowedQueriesPolicy, pool_along_positions


class SnapKV(WindowedQueriesPolicy):
    """SnapKV-D: SnapKV (Li et al., 2024) applied during decoding. At every eviction, tokens are
    scored by the attention of the last `obs_window` real queries (post-RoPE, as the model really
    attended), averaged and pooled along positions; the window's own tokens are protected."""

    name = "snapkv"

    def __init__(self, *, obs_window: int = 32, kernel: int = 5, pool: str = "avg", **kw):
        super().__init__(obs_window=obs_window, **kw)
        self.kernel = kernel
        self.pool = pool

    def score(self, state, view, ctx):
        return pool_along_positions(self.queries.mean(state, ctx), view.pos, self.kernel, self.pool)
