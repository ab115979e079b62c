import torch

from kvexp.policies.base import Policy, PolicyState, QueryWindow, pool_along_positions


class RKV(Policy):
    """R-KV (Cai et al., 2025): importance minus redundancy.

    importance: attention of the last `obs_window` real queries, averaged and max-pooled (kernel 7)
    along positions. redundancy: per token, the mean cosine similarity of its key with the other
    resident keys, after every token's pair with its most recent near-duplicate (cosine >
    `threshold`) is dropped from the duplicate's total (R-KV's `cal_similarity`: the newest copy of a
    repeated key is kept), then softmax-normalised over resident tokens. score = lam * importance
    - (1 - lam) * redundancy: redundant tokens score *lower* (the reference study's code added it).
    Pairwise similarities are kept per layer and brought up to date at each scoring for the keys
    written since, in one product (with slack S, one per S steps instead of S small ones), so an
    eviction costs O(N^2) elementwise work plus O(S * N * head_dim), not O(N^2 * head_dim).
    """

    name = "rkv"
    needs_attention = True

    def __init__(self, *, lam: float = 0.1, obs_window: int = 8, kernel: int = 7, threshold: float = 0.5, **kw):
        super().__init__(**kw)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"rkv lam must be in [0, 1], got {lam}")
        self.lam = lam
        self.obs_window = obs_window
        self.kernel = kernel
        self.threshold = threshold
        self.queries = QueryWindow(obs_window)

    def default_window(self, budget):
        return self.obs_window

    def init_state(self, batch, heads, n_slots, device):
        state = PolicyState(pairwise=frozenset({"cos"}), indices=frozenset({"unscored"}))
        self.queries.init(state, batch, heads, n_slots, device)
        state["cos"] = torch.zeros(batch, heads, n_slots, n_slots, device=device)
        state["key_norm"] = torch.zeros(batch, heads, n_slots, device=device)
        # slots written since the last scoring, whose similarities are not computed yet [B, H, Q]
        state["unscored"] = torch.zeros(batch, heads, 0, dtype=torch.int64, device=device)
        return state

    def observe(self, state, probs, ctx):
        self.queries.push(state, probs)

    def on_write(self, state, view, new_slots):
        # similarities wait for the next scoring: a slot is rewritten only after an eviction, and
        # every eviction scores first, so the keys of these slots are still the ones written now
        state["unscored"] = torch.cat([state["unscored"], new_slots], dim=-1)

    def update_similarities(self, state, view):
        """Cosine of every key written since the last scoring with every key, in `cos` [B, H, N, N]."""
        new_slots = state["unscored"]                                         # [B, H, Q]
        if new_slots.shape[-1] == 0:
            return
        state["unscored"] = new_slots[..., :0]
        # new keys against all, divided by the stored key norms
        keys = view.keys.float()                                              # [B, H, N, D]
        idx = new_slots.unsqueeze(-1)
        new = keys.gather(-2, idx.expand(-1, -1, -1, keys.shape[-1]))         # [B, H, Q, D]
        norm = state["key_norm"]
        norm.scatter_(-1, new_slots, new.norm(dim=-1))
        sims = (new / norm.gather(-1, new_slots).clamp(min=1e-12).unsqueeze(-1)) @ keys.transpose(-1, -2)
        sims = sims / norm.clamp(min=1e-12).unsqueeze(-2)                     # [B, H, Q, N]
        # cos stays 0 on empty slots (evicted ones are cleared) and on the diagonal, so scoring needs
        # no N x N mask: zero pairs with an empty slot (stale keys, prompt padding) and each key
        # against itself
        valid = view.pos >= 0                                                 # [B, H, N]
        sims = sims * (valid.gather(-1, new_slots).unsqueeze(-1) & valid.unsqueeze(-2))
        sims.scatter_(-1, idx, 0.0)
        cos = state["cos"]
        cos.scatter_(-2, idx.expand_as(sims), sims)
        cos.scatter_(-1, idx.transpose(-1, -2).expand(sims.shape[:-2] + sims.shape[-1:] + sims.shape[-2:-1]),
                     sims.transpose(-1, -2))

    def redundancy(self, cos: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """[B, H, N] softmax-normalised redundancy of each resident token (0 on empty slots).

        As R-KV's code computes it: each token i names its most recent near-duplicate d(i) (largest
        position with cosine > `threshold`), the pair (i, d(i)) is dropped from the similarity
        matrix, and token j's redundancy is the mean of column j. So a repeated key's *newest* copy
        loses the pair and looks least redundant. One deliberate difference: a token with no
        near-duplicate drops nothing (R-KV's code drops its similarity to token 0 there).
        """
        valid = pos >= 0
        # cos is symmetric, 0 off the resident pairs and on the diagonal (update_similarities), so
        # the column sums are the row sums
        dup_pos = torch.where(cos > self.threshold, pos.to(torch.int32).unsqueeze(-2), -1)
        latest, latest_slot = dup_pos.max(dim=-1)                                # d(i): [B, H, N]
        pair = torch.where(latest >= 0, cos.gather(-1, latest_slot.unsqueeze(-1)).squeeze(-1), 0.0)
        dropped = torch.zeros_like(pair).scatter_add_(-1, latest_slot, pair)      # column d(i) loses S[i, d(i)]
        mean = (cos.sum(dim=-1) - dropped) / valid.sum(dim=-1, keepdim=True).clamp(min=1)
        return torch.softmax(mean.masked_fill(~valid, float("-inf")), dim=-1).nan_to_num(0.0)

    def score(self, state, view, ctx):
        self.update_similarities(state, view)
        importance = pool_along_positions(self.queries.mean(state, ctx), view.pos, self.kernel, "max")
        return self.lam * importance - (1.0 - self.lam) * self.redundancy(state["cos"], view.pos)
