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

from omegaconf import OmegaConf

#: What the folder name already shows: config groups and keys kvexp.pipeline.cell names, and the launch.
NAMED_KEYS = frozenset({"model", "dataset", "policy", "budget", "budget.tokens", "budget.slack",
                        "dataset.shard.index", "dataset.shard.count", "experiment"})
_MULTIRUN = ("-m", "--multirun", "hydra.mode=MULTIRUN")


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


def _experiment_axes(experiment: str) -> list[str]:
    """Keys that the experiment file sweeps (hydra.sweeper.params with more than one value)."""
    from kvexp.pipeline.config import compose_config

    params = compose_config([f"experiment={experiment}"], return_hydra_config=True).hydra.sweeper.params or {}
    out = []
    for key, values in params.items():
        [override] = _parse([f"{key}={values}"])
        if override.is_sweep_override():
            out.append(key)
    return out


def swept_axes(args: Sequence[str]) -> list[str]:
    """Keys swept on this command line (or by its experiment) that the folder name does not show."""
    overrides = _parse(args)
    keys = [o.key_or_group for o in overrides if o.is_sweep_override()]
    experiments = [o.value() for o in overrides if o.key_or_group == "experiment" and not o.is_sweep_override()]
    if experiments and experiments[-1] is not None:
        keys += _experiment_axes(str(experiments[-1]))
    out: list[str] = []
    for key in keys:
        if key not in NAMED_KEYS and not key.startswith("hydra") and key not in out:
            out.append(key)
    return out


def name_swept_axes(args: Sequence[str]) -> list[str]:
    """Append `hydra.sweep.subdir=<the default>${kvexp.axis:key,value}...` to a multirun command line
    that sweeps keys the folder name does not show; other command lines come back unchanged."""
    args = list(args)
    if not any(a in _MULTIRUN for a in args) or any(a.lstrip("+").startswith("hydra.sweep.subdir=") for a in args):
        return args
    axes = swept_axes(args)
    if not axes:
        return args
    from kvexp.pipeline.config import compose_config

    base = OmegaConf.to_container(compose_config(return_hydra_config=True).hydra.sweep, resolve=False)["subdir"]
    # a config group's value is the option chosen for the job (hydra.runtime.choices)
    value = {key: f"${{hydra:runtime.choices.{key}}}" if _is_group(key) else f"${{{key}}}" for key in axes}
    subdir = base + "".join(f"${{kvexp.axis:{k},{value[k]}}}" for k in axes)
    return [*args, f"hydra.sweep.subdir='{subdir}'"]  # quoted: Hydra's grammar keeps interpolations there
