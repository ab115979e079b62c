"""Loading a preset in two steps, so a job can refuse a model before paying for its weights:

    source = ModelSource(preset)
    source.check()             # cheap: the local path / package exists (no weights, no network)
    hf_config = source.config()  # the architecture only (kvexp.engine.check_model_config runs on it)
    loaded = source.load()     # weights + tokenizer, eval mode, on the preset's device

Where the weights come from, by priority: `model.path` (a local folder, or pkg://<package>/<folder>
inside an installed package: `kvexp.models.preset.resolve_model_path`), else `model.source`:
  local        model.path only (the organism's weights ship in the package: pkg://kvexp/organism/checkpoint)
  hub          from_pretrained(hub_id); the access token comes from the HF_TOKEN environment variable
  gguf         a GGUF inside a pip package, converted once into a safetensors cache (kvexp.models.gguf)
  tiny_random  built in process (kvexp.models.tiny)
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from kvexp.models import gguf, tiny
from kvexp.models.chat import eos_token_ids
from kvexp.models.preset import ModelConfigError, ModelPreset

log = logging.getLogger(__name__)


class ModelUnavailableError(RuntimeError):
    """The weights or config could not be fetched (no network, gated repository, missing token)."""


@dataclass
class LoadedModel:
    model: Any  # a transformers *ForCausalLM in eval mode
    tokenizer: Any
    eos_token_ids: list[int]
    device: torch.device
    origin: str  # where the weights came from (a path or hub id), for run_meta.json


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def _sampled_bytes(path: Path, whole_below: int = 8 << 20, chunks: int = 64, chunk: int = 16 << 10) -> bytes:
    """A small file whole; a large one as `chunks` slices spread evenly over it, so that weights changed
    anywhere (not only in the first or last tensors) change the sample."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= whole_below:
            return f.read()
        parts = []
        for i in range(chunks):
            f.seek((size - chunk) * i // (chunks - 1))
            parts.append(f.read(chunk))
        return b"".join(parts)


def check_device(name: str) -> None:
    """Refuse a device this machine's torch cannot use, before any weights are read."""
    try:
        device = resolve_device(str(name))
    except (RuntimeError, ValueError) as e:
        raise ModelConfigError(
            f"model.device={name} is not a device ({e}); use model.device=auto, cpu or cuda"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no visible GPU"
        raise ModelConfigError(
            f"model.device={name} but this machine has {build}; use model.device=auto "
            f"(a GPU when there is one) or model.device=cpu"
        )


def resolve_dtype(name: str) -> torch.dtype | str:
    return "auto" if name == "auto" else getattr(torch, name)


def resolve_dtype_strict(name: str) -> torch.dtype:
    """A concrete dtype (a model built in process has no checkpoint dtype for 'auto' to follow)."""
    return torch.float32 if name == "auto" else getattr(torch, name)


class ModelSource:
    """One preset's weights, config and tokenizer (see the module docstring)."""

    def __init__(self, preset: ModelPreset):
        self.preset = preset

    # ---- cheap ----
    def _folder(self) -> Path | None:
        """The local model folder named by model.path, or None."""
        return self.preset.folder()

    def check(self) -> None:
        """Fail fast, with the fix, on a device this torch cannot use or a local path or package that is
        not there."""
        p = self.preset
        check_device(p.device)
        if self._folder():
            folder = self._folder()
            if not (folder / "config.json").is_file():
                what = "does not exist" if not folder.exists() else "has no config.json"
                hint = (
                    f"download it with `huggingface-cli download {p.hub_id} --local-dir {folder}`"
                    if p.hub_id
                    else "point model.path at a transformers model folder"
                )
                fallback = f", or set model.path=null to use model.source={p.source}" if p.source != "local" else ""
                raise ModelConfigError(f"model.path={folder} {what}; {hint}{fallback}")
        elif p.source == "gguf":
            gguf.locate_gguf(p.gguf["package"], p.gguf["file"])

    def fingerprint(self) -> str | None:
        """A short digest of the weights and model config this preset would load (None for weights built
        in process or fetched from the hub by name): retrained weights under another path differ, a
        moved copy does not. Reads at most about 1 MiB per weight file."""
        p = self.preset
        folder = self._folder()
        if folder is not None:
            files = sorted(
                f for f in folder.iterdir() if f.is_file() and (f.name == "config.json" or f.suffix in WEIGHT_SUFFIXES)
            )
        elif p.source == "gguf":
            files = [gguf.locate_gguf(p.gguf["package"], p.gguf["file"])]
        else:
            return None
        if not any(f.suffix in WEIGHT_SUFFIXES for f in files):
            return None
        digest = hashlib.sha256()
        for f in files:
            digest.update(f"{f.name}:{f.stat().st_size}:".encode())
            digest.update(_sampled_bytes(f))
        return digest.hexdigest()[:16]

    @property
    def origin(self) -> str:
        p = self.preset
        if self._folder():
            return str(self._folder())
        if p.source == "gguf":
            return str(p.converted_dir())
        return p.hub_id if p.source == "hub" else p.source

    def config(self):
        """The model's transformers config, without its weights."""
        p = self.preset
        if p.source == "tiny_random" and not p.path:
            return self._tiny_config
        from transformers import AutoConfig

        if p.source == "gguf" and not p.path and not gguf.is_converted(p.converted_dir()):
            path = gguf.locate_gguf(p.gguf["package"], p.gguf["file"])
            return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        return self._from_pretrained(AutoConfig)

    # ---- expensive ----
    def load(self) -> LoadedModel:
        p = self.preset
        device = resolve_device(p.device)
        if p.source == "tiny_random" and not p.path:
            model = tiny.build_model(self._tiny_config, int(p.tiny.get("init_seed", 0)), resolve_dtype_strict(p.dtype))
            tokenizer = self._tiny_tokenizer
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if p.source == "gguf" and not p.path:
                gguf.ensure_converted(gguf.locate_gguf(p.gguf["package"], p.gguf["file"]), p.converted_dir())
            tokenizer = self._from_pretrained(AutoTokenizer)
            model = self._from_pretrained(
                AutoModelForCausalLM, dtype=resolve_dtype(p.dtype), attn_implementation=p.attn_implementation
            )
        model = model.to(device).eval()
        return LoadedModel(
            model, tokenizer, eos_token_ids(tokenizer, getattr(model, "generation_config", None)), device, self.origin
        )

    # ---- helpers ----
    def _from_pretrained(self, cls, **kwargs):
        """cls.from_pretrained on the local folder or hub id, turning network/auth failures into a
        ModelUnavailableError that says what to do."""
        p = self.preset
        if self._folder():
            return cls.from_pretrained(str(self._folder()), **kwargs)
        if p.source == "gguf":
            return cls.from_pretrained(str(p.converted_dir()), **kwargs)
        token = os.environ.get("HF_TOKEN")  # never from the config: config.yaml is written to disk
        try:
            return cls.from_pretrained(p.hub_id, token=token, cache_dir=p.cache_dir, **kwargs)
        except OSError as e:
            raise ModelUnavailableError(
                f"could not load {p.hub_id} from the Hugging Face hub ({type(e).__name__}: {e}). With no network, "
                f"download it elsewhere and set model.path=<folder>; for a gated model accept its license and "
                f"export HF_TOKEN"
            ) from e

    @cached_property
    def _tiny_tokenizer(self):
        return tiny.build_tokenizer()

    @cached_property
    def _tiny_config(self):
        return tiny.build_config(self._tiny_tokenizer, self.preset.tiny)
