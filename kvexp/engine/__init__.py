"""The compression-aware generation engine: kvexp's KV cache, the decode loop, budget checks."""

from kvexp.engine.budget import Budget
from kvexp.engine.generate import Engine, GenerationSettings, Output, Request, check_model_config
from kvexp.engine.sampling import Sampler
from kvexp.engine.stopping import RepetitionStop
from kvexp.errors import ConfigError

__all__ = [
    "Budget",
    "ConfigError",
    "Engine",
    "GenerationSettings",
    "Output",
    "Request",
    "check_model_config",
    "Sampler",
    "RepetitionStop",
]
