"""kvexp's entry in transformers' attention interface. Models keep their own projections, RoPE and
norms; only the attention step is ours, so it sees the real post-RoPE queries and keys."""

from __future__ import annotations

from transformers import AttentionInterface

ATTN_IMPLEMENTATION = "kvexp"

# Model families whose attention modules call `past_key_values.update` and then the attention
# interface with (query, key, value) in [B, heads, L, head_dim]: the contract kvexp drives.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def kvexp_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, kv_cache=None, **kwargs):
    if kv_cache is None:
        raise RuntimeError("kvexp attention called without a kvexp cache; run the model through kvexp.engine.Engine")
    scaling = module.head_dim**-0.5 if scaling is None else scaling
    return kv_cache.attend(module.layer_idx, query, key, value, scaling), None


AttentionInterface.register(ATTN_IMPLEMENTATION, kvexp_attention)
