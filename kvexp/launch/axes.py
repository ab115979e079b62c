"""Sweeps over keys that the cell's folder name does not show get a folder per value.

    python -m kvexp.main -m policy=h2o policy.window=16,32 budget=128
    # -> .../h2o-b128-s1,policy.window=16 and .../h2o-b128-s1,policy.window=32

A job folder is named `<model>/<dataset>/<cell>` (kvexp.pipeline.cell). Sweeping anything else (a policy
parameter, the seed, generation.max_new_tokens, a generation preset) would send several jobs into one
folder, where the second refuses the first's results after the first has run. `name_swept_axes` finds
those keys on a multirun command line and in the sweeper params of the chosen experiment, and appends
each one's value to the folder name. A command line that sets `hydra.sweep.subdir` itself is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from kvexp.launch.shards import is_multirun

#: What the folder name already shows: config groups and keys kvexp.pipeline.cell names, and the launch.
NAMED_KEYS = frozenset(
    {
        "model",
        "dataset",
        "policy",
        "budget",
        "budget.tokens",
        "budget.slack",
        "budget.schedule",
        "dataset.shard.index",
        "dataset.shard.count",
        "experiment",
    }
)


def _parse(args: Sequence[str]) -> list:
    """The overrides among `args`; flags and their values (`--config-name x`, `--cfg job`) are skipped,
    and anything Hydra cannot parse is left for Hydra to report."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser, out = OverridesParser.create(), []
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            out.append(parser.parse_override(arg))
        except HydraException:
            continue
    return out


def _is_group(key: str) -> bool:
    from kvexp.pipeline.config import CONFIG_DIR

    return (CONFIG_DIR / key).is_dir()


def _base_config(overrides: list) -> DictConfig:
    """The config (Hydra's part included) of the command line's experiment, or of the defaults."""
    from kvexp.pipeline.config import compose_config

    experiments = [o.value() for o in overrides if o.key_or_group == "experiment" and not o.is_sweep_override()]
    chosen = [f"experiment={experiments[-1]}"] if experiments and experiments[-1] is not None else []
    return compose_config(chosen, return_hydra_config=True)


def swept_axes(args: Sequence[str], base: DictConfig | None = None) -> list[str]:
    """Keys swept on this command line (or by its experiment's sweeper params) that the folder name does
    not show. `base`: the composed `_base_config`, when the caller has it already."""
    overrides = _parse(args)
    keys = [o.key_or_group for o in overrides if o.is_sweep_override()]
    params = (base if base is not None else _base_config(overrides)).hydra.sweeper.params or {}
    keys += [o.key_or_group for o in _parse([f"{k}={v}" for k, v in params.items()]) if o.is_sweep_override()]
    out: list[str] = []
    for key in keys:
        if key not in NAMED_KEYS and not key.startswith("hydra") and key not in out:
            out.append(key)
    return out


def name_swept_axes(args: Sequence[str]) -> list[str]:
    """Append `hydra.sweep.subdir=<the default>${kvexp.axis:key,value}...` to a multirun command line
    that sweeps keys the folder name does not show; other command lines come back unchanged."""
    args = list(args)
    if not is_multirun(args) or any(a.lstrip("+").startswith("hydra.sweep.subdir=") for a in args):
        return args
    from hydra.errors import HydraException

    try:
        config = _base_config(_parse(args))
    except HydraException:  # e.g. an unknown experiment: Hydra itself says so, listing the options
        return args
    axes = swept_axes(args, config)
    if not axes:
        return args
    base = OmegaConf.to_container(config.hydra.sweep, resolve=False)["subdir"]
    # a config group's value is the option chosen for the job (hydra.runtime.choices)
    value = {key: f"${{hydra:runtime.choices.{key}}}" if _is_group(key) else f"${{{key}}}" for key in axes}
    subdir = base + "".join(f"${{kvexp.axis:{k},{value[k]}}}" for k in axes)
    return [*args, f"hydra.sweep.subdir='{subdir}'"]  # quoted: Hydra's grammar keeps interpolations there
