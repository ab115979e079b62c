import torch

from kvexp.errors import ConfigError
from kvexp.policies.scoring import WindowedQueriesPolicy, pool_along_positions, unit_keys

# the pairwise similarities of one eviction are computed in blocks of rows no larger than this
SIMILARITY_BLOCK_BYTES = 32 * 2**20


class RKV(WindowedQueriesPolicy):
    """R-KV (Cai et al., 2025): importance minus redundancy.

    importance: attention of the last `obs_window` real queries, averaged and max-pooled (kernel 7)
    along positions. redundancy: per token, the mean cosine similarity of its key with the other
    resident keys, after every token's pair with its most recent near-duplicate (cosine >
    `threshold`) is dropped from the duplicate's total (R-KV's `cal_similarity`: the newest copy of a
    repeated key is kept), then softmax-normalised over resident tokens. score = lam * importance
    - (1 - lam) * redundancy: redundant tokens score *lower* (the reference study's code added it).

    The similarities are not kept between evictions (an [N, N] matrix per layer and head would
    outweigh the cache it manages): each eviction computes them from the resident keys in blocks of
    rows, so its extra memory stays under SIMILARITY_BLOCK_BYTES (`eviction_workspace_bytes`).

    When: R-KV's released code compresses to its budget b in the forward after one that ends at a
    sequence length (prompt included) that is a multiple of `divide_length` (`rkv/modeling.py` 558-563
    count the length, 598-610 set the flag the next forward reads), so the phase of its compressions
    follows the prompt length. kvexp's `budget.tokens=b+128 budget.slack=128` compresses at the same
    sizes, but neither of its schedules at R-KV's steps for every prompt length: `cap` when the cache is
    full, `interval` every 128 decode steps from the first.
    """

    name = "rkv"

    def __init__(self, *, lam: float = 0.1, obs_window: int = 8, kernel: int = 7, threshold: float = 0.5, **kw):
        super().__init__(obs_window=obs_window, **kw)
        if not 0.0 <= lam <= 1.0:
            raise ConfigError(f"rkv lam must be in [0, 1], got {lam}")
        self.lam = lam
        self.kernel = kernel
        self.threshold = threshold

    @staticmethod
    def _block_rows(batch: int, heads: int, n_slots: int) -> int:
        per_row = batch * heads * n_slots * (4 + 4 + 1)  # similarities, duplicate positions, mask
        return max(1, min(n_slots, SIMILARITY_BLOCK_BYTES // per_row))

    def eviction_workspace_bytes(self, heads, query_heads, n_slots, head_dim):
        # per row: fp32 unit keys, row and dropped totals, the base score and order, and at least one
        # row of similarities (a block holds one when the batch is large); shared: one block
        per_row, _ = super().eviction_workspace_bytes(heads, query_heads, n_slots, head_dim)
        return per_row + heads * n_slots * ((head_dim + 2) * 4 + 9), SIMILARITY_BLOCK_BYTES

    def redundancy(self, keys: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """keys [B, H, N, D], pos [B, H, N] -> [B, H, N] softmax-normalised redundancy (0 on empty
        slots).

        As R-KV's code computes it: each token i names its most recent near-duplicate d(i) (largest
        position with cosine > `threshold`), the pair (i, d(i)) is dropped from the similarity
        matrix S, and token j's redundancy is the mean of column j. So a repeated key's *newest* copy
        loses the pair and looks least redundant. One deliberate difference: a token with no
        near-duplicate drops nothing (R-KV's code drops its similarity to token 0 there).
        """
        valid = pos >= 0
        unit = unit_keys(keys, pos)
        b, h, n, _ = unit.shape
        key_pos = torch.where(valid, pos, -1).to(torch.int32).unsqueeze(-2)  # [B, H, 1, N]
        total = torch.empty(b, h, n, device=keys.device)
        dropped = torch.zeros(b, h, n, device=keys.device)
        step = self._block_rows(b, h, n)
        for start in range(0, n, step):
            rows = torch.arange(start, min(start + step, n), device=keys.device)
            sim = unit[:, :, start : start + len(rows)] @ unit.transpose(-1, -2)  # S[i, :] for i in rows
            sim[:, :, torch.arange(len(rows), device=keys.device), rows] = 0.0  # no self-similarity
            total[..., start : start + len(rows)] = sim.sum(dim=-1)  # S is symmetric: row sums are column sums
            latest, latest_slot = torch.where(sim > self.threshold, key_pos, -1).max(dim=-1)  # d(i)
            pair = torch.where(latest >= 0, sim.gather(-1, latest_slot.unsqueeze(-1)).squeeze(-1), 0.0)
            dropped.scatter_add_(-1, latest_slot, pair)  # column d(i) loses S[i, d(i)]
        mean = (total - dropped) / valid.sum(dim=-1, keepdim=True).clamp(min=1)
        return torch.softmax(mean.masked_fill(~valid, float("-inf")), dim=-1).nan_to_num(0.0)

    def score(self, state, view, ctx):
        importance = pool_along_positions(self.queries.mean(state, ctx), view.pos, self.kernel, "max")
        return self.lam * importance - (1.0 - self.lam) * self.redundancy(view.keys, view.pos)
