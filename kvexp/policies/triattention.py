import math

import torch

from kvexp.errors import ConfigError
from kvexp.policies.base import Policy
from kvexp.policies.triattention_stats import CalibrationSettings, QueryStats, load_or_calibrate, rotary


class TriAttention(Policy):
    """TriAttention (Mao et al., 2026; WeianMao/triattention): scores a key by the attention that the
    model's average query is expected to pay it over the coming positions, from pre-RoPE statistics.

    For query head h of the key's KV head, with per-frequency statistics calibrated once per model
    (`kvexp.policies.triattention_stats`: q_mean_f, the mean pre-RoPE query pair, and q_abs_mean_f,
    the mean of its modulus), k_f the key's pre-RoPE pair, omega_f the RoPE frequencies, t the position
    of the token about to be generated and p the key's position, as the authors'
    `score_keys_for_round` computes it (their recipe: offsets 1, 2, 4, ..., 65536 and their mean):

        trig(o)  = sum_f |q_mean_f| |k_f| cos(omega_f (t - p + o) + arg(q_mean_f conj(k_f)))
        norm     = sum_f (q_abs_mean_f - |q_mean_f|) |k_f|
        raw_h    = s^2 (mean_o trig(o) + norm)               (s: the model's RoPE attention scaling)

    then each query head's scores are standardised over the evictable resident tokens (`standardize`,
    their `normalize_scores`) and the query heads of a KV head combined by `group_agg` (max: their
    per-(layer, KV head) selection). Keys sit in the cache post-RoPE: rather than rotating each back
    by its position, the rotation is folded into the query side, since
    q_mean_f conj(k_f) e^{i omega (t - p + o)} = q_mean_f conj(k_rot_f) e^{i omega (t + o)} / s, and the
    mean over offsets becomes one complex weight per frequency: the score is one matrix product of
    the keys with G vectors per row, with no state between steps.

    Defaults follow the authors' released recipe (`scripts/cli.py`) but for the prompt: no recent
    window and no sinks, group_agg max, the prompt counting toward the budget (their
    count_prompt_tokens=true). Their schedule lets the cache grow to b + 128, then compresses it to b
    (`slack_budget_trigger` with divide_length 128: `triattention/methods/triattention.py` 898-902
    compresses once the cache holds b + divide_length, counted by size, not by step): that is
    `budget.tokens=b+128 budget.slack=128` under the default `budget.schedule=cap`, where at an eviction
    kvexp scores the same tokens at the same t as theirs does after the step that fills the cache. (Their
    other trigger, 903-909, gates on the absolute position being a multiple of divide_length, which
    neither kvexp schedule reproduces for every prompt length.)

    Differences kvexp forces or chooses (README, "TriAttention's calibration"):
    - The prompt is not pinned by default. They never compress it (allow_prefill_compression=false),
      but under kvexp's semantics a pinned prompt longer than B - S is an error row, which would take
      TriAttention out of every cell whose prompts exceed the budget (the study's B=128 with chat
      templates, the smoke sweep); here prompt tokens compete under the same score, and a prompt
      longer than B is compressed at prefill by it. `policy.protect_prompt=true` is their rule
      where the prompts fit; the standardisation then runs over the generated tokens alone, as theirs.
    - Per (layer, KV head) sets: their released recipe (per_head_pruning) shares one selection per KV
      head across all layers, scored by the mean over layers of each layer's group maximum; kvexp
      keeps each layer's own set, which is their per_layer_perhead_pruning mode.
    - Ties go to the older token; they add seeded noise of 1e-6 to the scores.
    - With protect_prompt=true, a prompt longer than B - S is an error row (README, "Budget semantics"); theirs
      then keeps the first b prompt tokens and drops every generated one.
    - Calibration keeps Qwen3's queries after its q_norm, where theirs takes them before it (see
      triattention_stats); on models without a q_norm the two agree.
    - Calibration runs on the model's own sampled text rather than on a text file (see
      triattention_stats), over every token of several sequences; their calibrated queries carry
      an extra factor s (calibrate.py rotates them with a scaled table and scales once more), a
      constant per model that the standardisation removes.
    - Their `max` aggregation over offsets is not offered (the mean is their default).
    """

    name = "triattention"

    def __init__(
        self,
        *,
        offset_max: int = 65536,
        standardize: bool = True,
        calibration_prompts: int = 4,
        calibration_tokens: int = 256,
        calibration_seed: int = 0,
        **kwargs,
    ):
        kwargs.setdefault("group_agg", "max")
        super().__init__(**kwargs)
        if offset_max < 1:
            raise ConfigError(f"policy.offset_max must be >= 1, got {offset_max}")
        self.offset_max, self.standardize = offset_max, standardize
        # 1, 2, 4, ... up to offset_max (the authors' build_geometric_offsets)
        self._offsets = torch.tensor([float(2**i) for i in range(int(math.log2(offset_max)) + 1)], dtype=torch.float64)
        self.calibration = CalibrationSettings(calibration_prompts, calibration_tokens, calibration_seed)
        self.stats: QueryStats | None = None
        self._prepared_for = None

    def prepare(self, model) -> None:
        if self._prepared_for is not model:
            rotary(model)  # refuses a RoPE it cannot read before anything runs
            self.use_stats(load_or_calibrate(model, self.calibration))
            self._prepared_for = model

    def use_stats(self, stats: QueryStats) -> None:
        self.stats = stats
        self._extra = stats.q_abs_mean - stats.q_mean.abs()  # [L, Hq, F]
        self._weight_for, self._weight = None, None

    def future_weight(self, t: torch.Tensor) -> torch.Tensor:
        """[B, F] complex: the mean over offsets o of e^{i omega_f (t + o)}, angles in fp64 reduced mod
        2 pi before fp32. Every layer of a step shares it (the same ctx.incoming), so it is kept."""
        if self._weight_for is not t:
            omega = self.stats.inv_freq.to(t.device, torch.float64)
            angle = torch.remainder(
                (t.to(torch.float64).view(-1, 1, 1) + self._offsets.to(t.device).view(1, -1, 1)) * omega.view(1, 1, -1),
                2 * math.pi,
            )  # [B, O, F]
            self._weight = torch.polar(torch.ones_like(angle), angle).mean(dim=1).to(torch.complex64)
            self._weight_for = t
        return self._weight

    def raw_scores(self, keys: torch.Tensor, layer: int, t: torch.Tensor) -> torch.Tensor:
        """[B, H, G, N] unnormalised scores of post-RoPE keys [B, H, N, D] for query positions t [B]."""
        if self.stats is None:
            raise RuntimeError(
                "TriAttention has no calibration statistics: the engine calls policy.prepare(model) "
                "before generating (or pass them with use_stats)"
            )
        b, h, n, d = keys.shape
        f = d // 2
        q_mean = self.stats.q_mean[layer].to(keys.device).view(h, -1, f)  # [H, G, F]
        extra = self._extra[layer].to(keys.device).view(h, -1, f)
        scale = self.stats.attention_scaling
        side = q_mean.unsqueeze(0) * self.future_weight(t).view(b, 1, 1, f)  # [B, H, G, F]
        # Re(c conj(k)) = Re c Re k + Im c Im k, with the pair (k[f], k[f + D/2]) as Re, Im
        query_side = torch.cat([side.real, side.imag], dim=-1)  # [B, H, G, D]
        k = keys.float()
        trig = torch.matmul(query_side, k.transpose(-1, -2))  # [B, H, G, N]
        pair_norm = torch.sqrt(k[..., :f] ** 2 + k[..., f:] ** 2)  # [B, H, N, F]
        norm_term = torch.matmul(extra.unsqueeze(0).expand(b, -1, -1, -1), pair_norm.transpose(-1, -2))
        # the key's pre-RoPE pair is k_rot / s; the authors weight every frequency by s^2
        return (trig + norm_term) * scale

    def score(self, state, view, ctx):
        raw = self.raw_scores(view.keys, ctx.layer_idx, ctx.incoming)  # [B, H, G, N]
        if self.standardize:
            # standardised over the tokens that compete (resident, not pinned), as they normalise
            # over the generated tokens
            competing = ((view.pos >= 0) & ~self.protected_mask(view.pos, ctx)).unsqueeze(2)
            count = competing.sum(dim=-1, keepdim=True).clamp(min=1)
            mean = (raw * competing).sum(dim=-1, keepdim=True) / count
            var = (((raw - mean) * competing) ** 2).sum(dim=-1, keepdim=True) / count
            raw = (raw - mean) / var.sqrt().clamp(min=1e-6)
        return self.aggregate_groups(raw.unsqueeze(-2)).squeeze(-2)

    def eviction_workspace_bytes(self, heads, query_heads, n_slots, head_dim):
        # per row: the fp32 keys, their pair norms, and two [G, N] score blocks per KV head
        per_row, shared = super().eviction_workspace_bytes(heads, query_heads, n_slots, head_dim)
        group = query_heads // heads
        return per_row + heads * n_slots * 4 * (head_dim + head_dim // 2 + 2 * group), shared
