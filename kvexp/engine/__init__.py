"""The compression-aware generation engine: kvexp's KV cache, the decode loop, budget checks."""
from kvexp.engine.budget import Budget, ConfigError, PromptDoesNotFit
from kvexp.engine.generate import Engine, GenerationSettings, Output, Request, check_model_config
from kvexp.engine.sampling import Sampler
from kvexp.engine.stopping import RepetitionStop

__all__ = ["Budget", "ConfigError", "PromptDoesNotFit", "Engine", "GenerationSettings", "Output", "Request",
           "check_model_config", "Sampler", "RepetitionStop"]
