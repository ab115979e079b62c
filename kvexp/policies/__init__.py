"""Eviction policies. Adding one: a module here with a `Policy` subclass (a `name` and a `score`), its
entry in REGISTRY, and `conf/policy/<name>.yaml`.

Importing this package does not import torch: the registry names each class by its path, so readers
that need only the names (the report orders its rows by them) stay torch-free, and a policy's module
loads when the policy is first built.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kvexp.errors import ConfigError

if TYPE_CHECKING:
    from kvexp.policies.base import Policy

#: name -> "module:Class", in the README's table order (the reference first), which the report's rows follow.
REGISTRY: dict[str, str] = {
    "full": "kvexp.policies.full:Full",
    "streaming_llm": "kvexp.policies.streaming_llm:StreamingLLM",
    "h2o": "kvexp.policies.h2o:H2O",
    "tova": "kvexp.policies.tova:TOVA",
    "snapkv": "kvexp.policies.snapkv:SnapKV",
    "knorm": "kvexp.policies.knorm:KNorm",
    "rkv": "kvexp.policies.rkv:RKV",
    "keydiff": "kvexp.policies.keydiff:KeyDiff",
    "gkv": "kvexp.policies.gkv:GKV",
    "triattention": "kvexp.policies.triattention:TriAttention",
    "random": "kvexp.policies.random:Random",
    "random_attention": "kvexp.policies.random_attention:RandomAttention",
    "vase": "kvexp.policies.vase:VaSE",
}
POLICY_NAMES = tuple(REGISTRY)


def policy_class(name: str) -> type[Policy]:
    """The registered class of a policy name."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown policy {name!r}; valid policies: {', '.join(POLICY_NAMES)}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_policy(cfg: Mapping[str, Any] | str, **overrides) -> Policy:
    """A policy from its config node (`name` plus parameters) or its name."""
    params = {"name": cfg} if isinstance(cfg, str) else dict(cfg)
    params.update(overrides)
    name = params.pop("name", None)
    cls = policy_class(name)
    try:
        return cls(**params)
    except TypeError as e:
        raise ConfigError(f"policy '{name}' got an unknown parameter ({e}); check conf/policy/{name}.yaml") from None


_PROTOCOL = ("Policy", "StepContext", "LayerView", "PolicyState")


def __getattr__(attr: str) -> Any:
    """`POLICIES` (name -> class) and the protocol classes, loaded (with torch) on first use."""
    if attr == "POLICIES":
        return {name: policy_class(name) for name in POLICY_NAMES}
    if attr in _PROTOCOL:
        return getattr(importlib.import_module("kvexp.policies.base"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


__all__ = ["REGISTRY", "POLICY_NAMES", "POLICIES", "policy_class", "build_policy", *_PROTOCOL]
