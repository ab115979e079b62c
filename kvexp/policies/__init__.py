"""Eviction policies. Adding one: a module here with a `Policy` subclass (a `name` and a `score`),
an entry in POLICIES, and `conf/policy/<name>.yaml`."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvexp.policies.base import Policy, StepContext, LayerView, PolicyState, eviction_order
from kvexp.policies.full import Full
from kvexp.policies.gkv import GKV
from kvexp.policies.h2o import H2O
from kvexp.policies.keydiff import KeyDiff
from kvexp.policies.knorm import KNorm
from kvexp.policies.random import Random
from kvexp.policies.rkv import RKV
from kvexp.policies.snapkv import SnapKV
from kvexp.policies.streaming_llm import StreamingLLM
from kvexp.policies.tova import TOVA
from kvexp.policies.triattention import TriAttention

POLICIES: dict[str, type[Policy]] = {p.name: p for p in (Full, StreamingLLM, H2O, TOVA, SnapKV, KNorm, RKV, KeyDiff, GKV, TriAttention, Random)}
POLICY_NAMES = tuple(POLICIES)


def build_policy(cfg: Mapping[str, Any] | str, **overrides) -> Policy:
    """A policy from its config node (`name` plus parameters) or its name."""
    params = {"name": cfg} if isinstance(cfg, str) else dict(cfg)
    params.update(overrides)
    name = params.pop("name", None)
    if name not in POLICIES:
        from kvexp.engine.budget import ConfigError
        raise ConfigError(f"unknown policy {name!r}; valid policies: {', '.join(POLICY_NAMES)}")
    try:
        return POLICIES[name](**params)
    except TypeError as e:
        from kvexp.engine.budget import ConfigError
        raise ConfigError(f"policy '{name}' got an unknown parameter ({e}); check conf/policy/{name}.yaml") from None


__all__ = ["Policy", "StepContext", "LayerView", "PolicyState", "eviction_order", "POLICIES", "POLICY_NAMES",
           "build_policy"]
