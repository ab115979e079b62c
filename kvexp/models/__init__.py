"""Model presets (`conf/model/*.yaml`): where the weights come from and how to prompt the model.

preset = ModelPreset.from_cfg(cfg.model)
source = ModelSource(preset); source.check(); hf_config = source.config(); loaded = source.load()
text = format_prompt(loaded.tokenizer, preset, problem.question); ids = encode_prompt(loaded.tokenizer, text)
"""

from kvexp.models.chat import chat_messages, encode_prompt, eos_token_ids, format_prompt
from kvexp.models.loading import LoadedModel, ModelSource, ModelUnavailableError, resolve_device
from kvexp.models.preset import ModelConfigError, ModelPreset

__all__ = [
    "ModelPreset",
    "ModelConfigError",
    "ModelSource",
    "LoadedModel",
    "ModelUnavailableError",
    "resolve_device",
    "chat_messages",
    "format_prompt",
    "encode_prompt",
    "eos_token_ids",
]
