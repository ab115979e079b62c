"""TriAttention's calibration: per-model statistics of the pre-RoPE queries, computed once and cached.

What is computed (as the authors' `scripts/calibrate.py`): for every layer, query head and RoPE
frequency f, with q_f the complex pair (q[f], q[f + D/2]) of a pre-RoPE query,
    q_mean[f] = mean of q_f over every calibration token,    q_abs_mean[f] = mean of |q_f|.

On what: the authors run one forward pass over a plain text (they report the statistics are
domain-agnostic). kvexp has no text that every model's tokenizer reads (the organism's tokenizer
knows only its task), and the statistics must not depend on which requests a run holds (a request's
tokens never do), so the model writes its own calibration text: `prompts` sequences, each one seeded
random token of its vocabulary (after its BOS token, if it has one) continued by sampling `tokens`
tokens at temperature 1 (seeded, on the CPU). Then one forward pass over those sequences captures
every query. The sequences are recorded in the cache file.

The queries are taken where the attention function receives them (after any q_norm, after RoPE)
and rotated back by their position, so the capture is the same for every family kvexp drives. A
deliberate difference on Qwen3: the authors' `scripts/calibrate.py` (170-190) recomputes each query
as `q_proj` of the layer's input, before Qwen3's per-head `q_norm`; kvexp keeps the normalised query,
which is the one attention uses and so the one whose average the score should predict. On models
without a q_norm (Llama, Mistral, Qwen2) the two are the same query; on a tiny random Qwen3 the
statistics differ by a median relative 0.84.

Cache: `$KVEXP_CACHE/triattention/<model_type>-<key>.pt` (default `~/.cache/kvexp`), where key is a
digest of the model (its config's shape, RoPE frequencies and a sample of every weight tensor) and
of the calibration settings. Written atomically (two jobs calibrating the same model at once both
write the same file; a reader sees one whole copy) and reused by every later job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from kvexp.errors import ConfigError
from kvexp.files import replaced_atomically
from kvexp.models.preset import cache_root

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the statistics or the file change meaning
CAPTURE_ATTENTION = "kvexp_triattention_capture"
# RoPE variants whose frequencies change with the sequence length: a key's rotation could not be
# read back from one table of frequencies
_LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")


@dataclass
class QueryStats:
    """q_mean [L, Hq, F] complex64, q_abs_mean [L, Hq, F] fp32, the model's RoPE frequencies
    inv_freq [F] fp32 and its attention scaling (the factor its cos/sin tables carry)."""

    q_mean: Tensor
    q_abs_mean: Tensor
    inv_freq: Tensor
    attention_scaling: float = 1.0

    def to(self, device) -> QueryStats:
        return QueryStats(
            self.q_mean.to(device), self.q_abs_mean.to(device), self.inv_freq.to(device), self.attention_scaling
        )


@dataclass(frozen=True)
class CalibrationSettings:
    prompts: int = 4
    tokens: int = 256
    seed: int = 0

    def __post_init__(self):
        if self.prompts < 1 or self.tokens < 1:
            raise ConfigError(
                f"policy.calibration_prompts and policy.calibration_tokens must be >= 1, "
                f"got {self.prompts} and {self.tokens}"
            )


def rotary(model):
    """The model's rotary embedding module (one per model in the families kvexp drives)."""
    body = getattr(model, "model", model)
    rope = getattr(body, "rotary_emb", None)
    if rope is None or not hasattr(rope, "inv_freq"):
        raise ConfigError(
            f"TriAttention needs the model's rotary embedding (model.model.rotary_emb with inv_freq); "
            f"{type(model).__name__} has none"
        )
    rope_type = getattr(rope, "rope_type", "default")
    if rope_type in _LENGTH_DEPENDENT_ROPE:
        raise ConfigError(
            f"TriAttention cannot score keys under rope_type {rope_type!r}: its frequencies change with "
            f"the sequence length; use a checkpoint with a fixed RoPE"
        )
    return rope


def model_digest(model) -> str:
    """A digest of what the statistics depend on: the attention shapes, the RoPE frequencies and a
    strided sample of every weight tensor (retrained or other weights differ in it)."""
    config, rope = model.config, rotary(model)
    h = hashlib.sha256()
    shape = {
        k: getattr(config, k, None)
        for k in (
            "model_type",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "hidden_size",
            "vocab_size",
        )
    }
    h.update(json.dumps(shape, sort_keys=True).encode())
    h.update(rope.inv_freq.detach().float().cpu().numpy().tobytes())
    h.update(repr(float(getattr(rope, "attention_scaling", 1.0))).encode())
    for name, p in sorted(model.named_parameters(), key=lambda item: item[0]):
        flat = p.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 256)][:256]
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        h.update(sample.float().cpu().numpy().tobytes())
    return h.hexdigest()


def cache_path(model, settings: CalibrationSettings, digest: str | None = None) -> Path:
    digest = digest or model_digest(model)
    key = hashlib.sha256(
        json.dumps(
            {
                "format": FORMAT,
                "model": digest,
                "prompts": settings.prompts,
                "tokens": settings.tokens,
                "seed": settings.seed,
            }
        ).encode()
    ).hexdigest()[:20]
    return cache_root() / "triattention" / f"{model.config.model_type}-{key}.pt"


def load_or_calibrate(model, settings: CalibrationSettings) -> QueryStats:
    """The model's statistics from the cache, computed and cached first if absent (or unreadable)."""
    digest = model_digest(model)
    path = cache_path(model, settings, digest)
    device = next(model.parameters()).device
    if path.is_file():
        try:
            return _from_payload(torch.load(path, map_location="cpu", weights_only=True), model, digest).to(device)
        except Exception as e:  # a damaged or foreign file: recompute and replace it
            log.warning("TriAttention calibration %s is unreadable (%s); recomputing it", path, e)
    log.info(
        "TriAttention: calibrating %s (%d sequences of %d tokens), cache %s",
        model.config.model_type,
        settings.prompts,
        settings.tokens,
        path,
    )
    sequences = calibration_sequences(model, settings)
    stats = query_statistics(model, sequences)
    _save(path, stats, sequences, settings, digest, model)
    return stats.to(device)


@torch.inference_mode()
def calibration_sequences(model, settings: CalibrationSettings) -> list[list[int]]:
    """The model's own text: per sequence, a seeded random token (after BOS if any), then sampling."""
    from transformers import DynamicCache

    config = model.config
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(settings.seed)
    first = torch.randint(0, config.vocab_size, (settings.prompts, 1), generator=gen)
    bos = getattr(config, "bos_token_id", None)
    if isinstance(bos, int):
        first = torch.cat([torch.full_like(first, bos), first], dim=1)
    ids = first
    cache = DynamicCache(config=config)
    step = ids
    for _ in range(settings.tokens):
        logits = model(input_ids=step.to(device), past_key_values=cache, use_cache=True).logits[:, -1]
        probs = torch.softmax(logits.float().cpu(), dim=-1)
        step = torch.multinomial(probs, 1, generator=gen)
        ids = torch.cat([ids, step], dim=1)
    return ids.tolist()


def derotate(rotated: Tensor, positions: Tensor, inv_freq: Tensor, attention_scaling: float) -> Tensor:
    """Complex pairs [..., T, F] of vectors [..., T, D] that RoPE ("rotate half" pairing, as Llama and
    Qwen apply it) rotated at `positions` [T]: rotated back, and divided by the attention scaling."""
    f = rotated.shape[-1] // 2
    angle = positions.float().view(-1, 1) * inv_freq.float().view(1, -1)  # as the model computes it
    pairs = torch.complex(rotated[..., :f].float(), rotated[..., f:].float())
    return pairs * torch.polar(torch.ones_like(angle), -angle) / attention_scaling


@torch.inference_mode()
def query_statistics(model, sequences: list[list[int]]) -> QueryStats:
    """One forward pass over `sequences` (equal lengths); the pre-RoPE query statistics of every layer
    and query head over every token."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    config, rope = model.config, rotary(model)
    device = next(model.parameters()).device
    scaling = float(getattr(rope, "attention_scaling", 1.0))
    inv_freq = rope.inv_freq.detach().float()
    sums: dict[int, tuple[Tensor, Tensor, int]] = {}

    def capture(module, query, key, value, attention_mask, **kwargs):
        positions = torch.arange(query.shape[-2], device=query.device)
        pairs = derotate(query, positions, inv_freq.to(query.device), scaling)  # [B, Hq, T, F]
        total, total_abs, n = sums.get(module.layer_idx, (0, 0, 0))
        sums[module.layer_idx] = (
            total + pairs.to(torch.complex128).sum(dim=(0, 2)),
            total_abs + pairs.abs().double().sum(dim=(0, 2)),
            n + pairs.shape[0] * pairs.shape[2],
        )
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register(CAPTURE_ATTENTION, capture)
    previous = config._attn_implementation
    config._attn_implementation = CAPTURE_ATTENTION
    try:
        model(input_ids=torch.tensor(sequences, device=device), use_cache=False)
    finally:
        config._attn_implementation = previous
    layers = range(config.num_hidden_layers)
    if sorted(sums) != list(layers):
        raise RuntimeError(
            f"TriAttention calibration captured queries of layers {sorted(sums)}, expected all "
            f"{config.num_hidden_layers}: the model's attention does not go through transformers' "
            f"attention interface"
        )
    q_mean = torch.stack([sums[i][0] / sums[i][2] for i in layers]).to(torch.complex64).cpu()
    q_abs = torch.stack([sums[i][1] / sums[i][2] for i in layers]).float().cpu()
    return QueryStats(q_mean, q_abs, inv_freq.cpu(), scaling)


def _save(path: Path, stats: QueryStats, sequences, settings: CalibrationSettings, digest: str, model) -> None:
    payload = {
        "format": FORMAT,
        "model_digest": digest,
        "model_type": model.config.model_type,
        "settings": {"prompts": settings.prompts, "tokens": settings.tokens, "seed": settings.seed},
        "prompts": sequences,
        "torch": str(torch.__version__),
        "q_mean_real": stats.q_mean.real.contiguous(),
        "q_mean_imag": stats.q_mean.imag.contiguous(),
        "q_abs_mean": stats.q_abs_mean,
        "inv_freq": stats.inv_freq,
        "attention_scaling": stats.attention_scaling,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path, "wb") as f:
        torch.save(payload, f)


def _from_payload(payload: dict, model, digest: str) -> QueryStats:
    config = model.config
    if payload.get("format") != FORMAT or payload.get("model_digest") != digest:
        raise ValueError("written for another model or format")
    stats = QueryStats(
        torch.complex(payload["q_mean_real"], payload["q_mean_imag"]),
        payload["q_abs_mean"],
        payload["inv_freq"],
        float(payload["attention_scaling"]),
    )
    want = (config.num_hidden_layers, config.num_attention_heads, stats.inv_freq.numel())
    if tuple(stats.q_mean.shape) != want or tuple(stats.q_abs_mean.shape) != want:
        raise ValueError(f"statistics of shape {tuple(stats.q_mean.shape)}, the model needs {want}")
    if not math.isfinite(stats.attention_scaling):
        raise ValueError("attention scaling is not finite")
    return stats
