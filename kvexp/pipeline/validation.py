"""Checks of policy parameters and generation settings that a job runs before any model loads.

A value the engine would only trip over mid-decode (an even pooling kernel is a shape error at the
first eviction, an unknown pool mode an error row per sample) or silently misuse (a negative kernel
pools nothing, a cosine threshold of 7 finds no duplicate) is refused here, naming the allowed values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from kvexp.errors import ConfigError


def _refuse(message: str) -> ConfigError:
    return ConfigError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


# parameter -> (accepts, what is allowed, an example of a valid override). The same names mean the same
# thing in every policy that has them (conf/policy/*.yaml).
_POLICY_RULES: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "window": (
        lambda v: v is None or (_is_int(v) and v >= 0),
        "an integer >= 0, or null for the policy's default",
        "policy.window=16",
    ),
    "n_sink": (lambda v: _is_int(v) and v >= 0, "an integer >= 0", "policy.n_sink=4"),
    "obs_window": (lambda v: _is_int(v) and v >= 1, "an integer >= 1", "policy.obs_window=8"),
    "kernel": (
        lambda v: _is_int(v) and v >= 1 and v % 2 == 1,
        "a positive odd integer (1 = no pooling; an even kernel would shift the pooled scores)",
        "policy.kernel=5",
    ),
    "pool": (lambda v: v in ("avg", "max"), "avg or max", "policy.pool=avg"),
    "threshold": (
        lambda v: _is_number(v) and -1.0 <= v <= 1.0,
        "a cosine similarity: a number in [-1, 1]",
        "policy.threshold=0.5",
    ),
    "lam": (lambda v: _is_number(v) and 0.0 <= v <= 1.0, "a number in [0, 1]", "policy.lam=0.1"),
    "protect_prompt": (lambda v: isinstance(v, bool), "true or false", "policy.protect_prompt=true"),
    "group_agg": (lambda v: v in ("mean", "max", "sum"), "mean, max or sum", "policy.group_agg=mean"),
    "normalize": (lambda v: v in ("sum", "mean"), "sum or mean", "policy.normalize=sum"),
    "standardize": (lambda v: isinstance(v, bool), "true or false", "policy.standardize=true"),
    "offset_max": (lambda v: _is_int(v) and v >= 1, "an integer >= 1", "policy.offset_max=65536"),
    "calibration_prompts": (lambda v: _is_int(v) and v >= 1, "an integer >= 1", "policy.calibration_prompts=4"),
    "calibration_tokens": (lambda v: _is_int(v) and v >= 1, "an integer >= 1", "policy.calibration_tokens=256"),
    "calibration_seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0", "policy.calibration_seed=0"),
}


def check_policy_params(params: Mapping[str, Any]) -> None:
    """Refuse a policy parameter outside its allowed values (params: the `policy` config node)."""
    for key, value in params.items():
        rule = _POLICY_RULES.get(key)
        if rule is not None and not rule[0](value):
            raise _refuse(
                f"policy.{key} must be {rule[1]}, got {value!r} (policy {params.get('name')!r}); e.g. {rule[2]}"
            )


def check_generation(gen: Mapping[str, Any], seed: Any) -> None:
    """Refuse sampling settings and seeds the engine cannot use (gen: the `generation` config node)."""
    checks = (
        ("temperature", lambda v: _is_number(v) and v >= 0, "a number >= 0 (0 = greedy)", "generation.temperature=0"),
        (
            "top_p",
            lambda v: _is_number(v) and 0 < v <= 1,
            "a number in (0, 1] (1 = no nucleus cut)",
            "generation.top_p=1.0",
        ),
        ("top_k", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0 = no top-k cut)", "generation.top_k=0"),
        ("max_new_tokens", lambda v: _is_int(v) and v >= 1, "an integer >= 1", "generation.max_new_tokens=512"),
        ("num_samples", lambda v: _is_int(v) and v >= 1, "an integer >= 1", "generation.num_samples=1"),
        (
            "batch_size",
            lambda v: v == "auto" or (_is_int(v) and v >= 1),
            "auto (rows sized from memory) or an integer >= 1",
            "generation.batch_size=auto",
        ),
        ("max_batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1", "generation.max_batch_size=256"),
        (
            "memory_gb",
            lambda v: v is None or (_is_number(v) and v > 0),
            "a positive number of GB, or null",
            "generation.memory_gb=70",
        ),
        (
            "max_prefill_tokens",
            lambda v: _is_int(v) and v >= 1,
            "an integer >= 1",
            "generation.max_prefill_tokens=8192",
        ),
    )
    for key, ok, allowed, example in checks:
        if key in gen and not ok(gen[key]):
            raise _refuse(f"generation.{key} must be {allowed}, got {gen[key]!r}; e.g. {example}")
    n, temperature = gen.get("num_samples"), gen.get("temperature")
    if _is_int(n) and n > 1 and temperature == 0:
        # greedy decoding gives every sample of a problem the same tokens: n copies, a collapsed interval
        raise _refuse(
            f"generation.num_samples={n} with generation.temperature=0 (greedy) gives {n} identical samples per "
            f"problem; sample with a temperature above 0 (e.g. generation.temperature=0.6) or set "
            f"generation.num_samples=1"
        )
    if not _is_int(seed):
        raise _refuse(f"seed must be an integer (the root of every per-sample seed), got {seed!r}; e.g. seed=0")
