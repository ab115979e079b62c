"""Model inputs: the chat template (with the preset's system prompt and thinking switch) and the stop
tokens. The recorded `prompt` is the exact template output; the prompt ids are that text tokenized
without adding special tokens, so the text alone reproduces the model's input."""

from __future__ import annotations

from typing import Any

from kvexp.models.preset import ModelPreset


def chat_messages(preset: ModelPreset, user_message: str) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The messages and extra chat-template keywords for one user turn."""
    system = preset.system_prompt
    template_kwargs: dict[str, Any] = {}
    if preset.thinking is not None:
        if preset.thinking_switch == "enable_thinking":
            template_kwargs["enable_thinking"] = bool(preset.thinking)
        elif preset.thinking_switch == "detailed_thinking":
            system = f"detailed thinking {'on' if preset.thinking else 'off'}"
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user_message}]
    return messages, template_kwargs


def format_prompt(tokenizer, preset: ModelPreset, user_message: str) -> str:
    """The model input text for one user turn, generation prompt included."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"the tokenizer of model '{preset.name}' has no chat template; kvexp evaluates chat "
            f"models through their template"
        )
    messages, kwargs = chat_messages(preset, user_message)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a formatted prompt. Special tokens are already in the text (the template wrote
    them), so none are added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def eos_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Every id that ends a turn: the generation config's eos ids (Llama 3 lists several) and the
    tokenizer's eos token."""
    ids: list[int] = []
    configured = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    for value in (configured, tokenizer.eos_token_id):
        if value is None:
            continue
        for i in value if isinstance(value, (list, tuple)) else [value]:
            if int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("the model defines no end-of-sequence token; generation could only stop at max_new_tokens")
    return ids
