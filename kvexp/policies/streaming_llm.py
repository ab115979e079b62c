from kvexp.policies.base import Policy


class StreamingLLM(Policy):
    """StreamingLLM (Xiao et al., 2023): attention sinks plus the most recent tokens. Recency is
    the score, so the oldest non-sink token goes first; sinks are positions, not storage slots."""

    name = "streaming_llm"

    def __init__(self, *, n_sink: int = 4, **kw):
        super().__init__(n_sink=n_sink, **kw)

    def score(self, state, view, ctx):
        return view.pos.float()
