"""A model preset: the `model` config group node, typed. Everything about *which* model and *how to
talk to it* (weights source, dtype, device, system prompt, thinking switch) lives here; decoding
settings live in the `generation` group (which takes its sampling defaults from the preset)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvexp.errors import ConfigError

SOURCES = ("hub", "gguf", "tiny_random", "local")

# model.path may name a folder inside an installed Python package, so that weights shipped in a package
# are found wherever it is installed: pkg://<package>/<folder> (e.g. the organism's
# pkg://kvexp/organism/checkpoint)
PACKAGE_PATH_PREFIX = "pkg://"

# How a preset's `thinking: true|false` reaches the model. Each reasoning family has its own switch:
#   enable_thinking:   a keyword of the chat template (Qwen3)
#   detailed_thinking: the system prompt "detailed thinking on|off" (Llama-Nemotron)
THINKING_SWITCHES = ("enable_thinking", "detailed_thinking")

DTYPES = ("float32", "bfloat16", "float16", "auto")


class ModelConfigError(ConfigError):
    """A model preset that cannot work, found before anything loads. The message names the fix."""


@dataclass(frozen=True)
class ModelPreset:
    name: str
    source: str
    hub_id: str | None = None
    gguf: Mapping[str, str] | None = None
    path: str | None = None
    cache_dir: str | None = None
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    device: str = "auto"
    system_prompt: str | None = None
    thinking: bool | None = None
    thinking_switch: str | None = None
    tiny: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> ModelPreset:
        """From the resolved `model` node; keys the pipeline does not need here (sampling) are ignored."""
        known = set(cls.__dataclass_fields__)
        preset = cls(**{k: v for k, v in dict(cfg).items() if k in known})
        preset.validate()
        return preset

    def validate(self) -> None:
        """Cheap consistency checks (no file system, no network)."""
        if self.source not in SOURCES:
            raise ModelConfigError(f"model.source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.source == "local" and not self.path:
            raise ModelConfigError(f"model '{self.name}' has source local but no model.path; set model.path=<folder>")
        if self.source == "hub" and not (self.hub_id or self.path):
            raise ModelConfigError(f"model '{self.name}' has source hub but neither model.hub_id nor model.path")
        if self.source == "gguf" and not (self.gguf and self.gguf.get("package") and self.gguf.get("file")):
            raise ModelConfigError(f"model '{self.name}' has source gguf but no model.gguf.package / model.gguf.file")
        if self.dtype not in DTYPES:
            raise ModelConfigError(f"model.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.thinking_switch is not None and self.thinking_switch not in THINKING_SWITCHES:
            raise ModelConfigError(
                f"model.thinking_switch must be one of {', '.join(THINKING_SWITCHES)} or null, "
                f"got {self.thinking_switch!r}"
            )
        if self.thinking is not None and self.thinking_switch is None:
            raise ModelConfigError(f"model '{self.name}' has no thinking switch; leave model.thinking=null")
        if self.thinking_switch == "detailed_thinking" and self.system_prompt:
            raise ModelConfigError(
                f"model '{self.name}' takes its reasoning switch in the system prompt (\"detailed thinking on|off\"); "
                f"leave model.system_prompt=null and put instructions in the user turn (switch with model.thinking)"
            )

    def folder(self) -> Path | None:
        """The local model folder named by model.path (see `resolve_model_path`), or None."""
        return resolve_model_path(self.path) if self.path else None

    def converted_dir(self) -> Path:
        """Where a converted (GGUF -> safetensors) copy of this model lives:
        model.cache_dir, else $KVEXP_CACHE/models/<name>, else ~/.cache/kvexp/models/<name>."""
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        return cache_root() / "models" / self.name


def cache_root() -> Path:
    """kvexp's cache folder for things computed once and reused by later jobs (converted weights,
    TriAttention's calibration): $KVEXP_CACHE, else ~/.cache/kvexp."""
    return Path(os.environ.get("KVEXP_CACHE") or "~/.cache/kvexp").expanduser()


def resolve_model_path(path: str) -> Path:
    """A model folder from model.path: a file system path (`~` expanded), or pkg://<package>/<folder>,
    a folder inside the installed top-level package <package> (located without importing it)."""
    if not path.startswith(PACKAGE_PATH_PREFIX):
        return Path(path).expanduser()
    package, _, inside = path[len(PACKAGE_PATH_PREFIX) :].partition("/")
    spec = importlib.util.find_spec(package) if package and "." not in package else None
    if spec is None or not spec.submodule_search_locations:
        raise ModelConfigError(
            f"model.path={path}: {package!r} is not an installed package; write "
            f"{PACKAGE_PATH_PREFIX}<package>/<folder> or a file system path"
        )
    return Path(next(iter(spec.submodule_search_locations))).resolve() / inside
