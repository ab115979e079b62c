"""Composing a job config outside the command line (tests, notebooks), the same way `kvexp.main` does.

cfg = compose_config(["model=tiny_random", "policy=snapkv", "budget=512"])
metrics = run_job(cfg, "outputs/scratch/snapkv")
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from kvexp.pipeline.cell import register_resolvers

# kvexp/conf: in a checkout a link to the repository's conf/, in an installed wheel a copy (package data)
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
CONFIG_NAME = "config"

# Config groups whose options are numbers (conf/budget/128.yaml ...). Hydra's override grammar reads a
# bare `budget=128` (or the sweep `budget=128,512`) as integers and then refuses them as group choices,
# so overrides are quoted before Hydra parses them: `budget=128,512` works exactly as typed.
NUMERIC_GROUPS = ("budget",)
_NUMERIC_CHOICE = re.compile(rf"^(?P<key>(?:{'|'.join(NUMERIC_GROUPS)})(?:@[\w.]+)?)=(?P<values>\d+(?:,\d+)*)$")


def quote_numeric_choices(args: Sequence[str]) -> list[str]:
    """`budget=128,512` -> `budget='128','512'`; every other argument unchanged."""
    out = []
    for arg in args:
        m = _NUMERIC_CHOICE.match(arg)
        out.append(f"{m['key']}=" + ",".join(f"'{v}'" for v in m["values"].split(",")) if m else arg)
    return out


def compose_config(overrides: Sequence[str] = (), *, return_hydra_config: bool = False) -> DictConfig:
    """The job config for `overrides` (command-line syntax), composed with Hydra's compose API."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            config_name=CONFIG_NAME, overrides=quote_numeric_choices(overrides), return_hydra_config=return_hydra_config
        )
