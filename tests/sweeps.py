"""An experiment's sweep as Hydra's basic sweeper expands it, for tests that run or check its cells."""

from __future__ import annotations

import itertools

from omegaconf import OmegaConf

from kvexp.pipeline.config import CONFIG_DIR


def options(group: str) -> list[str]:
    """The options of a config group: its YAML files."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def sweep_params(cfg) -> dict[str, list[str]]:
    """hydra.sweeper.params of a composed config as {key: [values]}: a list as written, a group's
    `glob(...)` over the group's options (as the sweeper expands it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob

    parser, axes = OverridesParser.create(), {}
    for key, value in (OmegaConf.select(cfg, "hydra.sweeper.params") or {}).items():
        override = parser.parse_override(f"{key}={value}")
        if isinstance(override.value(), Glob):
            axes[key] = override.value().filter(options(key))
        elif override.is_sweep_override():
            axes[key] = list(override.sweep_string_iterator())
        else:
            axes[key] = [override.get_value_element_as_str()]
    return axes


def cells(cfg) -> list[list[str]]:
    """Every cell of the sweep as its list of overrides."""
    axes = sweep_params(cfg)
    return [[f"{k}={v}" for k, v in zip(axes, values)] for values in itertools.product(*axes.values())]
