"""Pydantic configs (frozen, unknown fields forbidden) and YAML loading with dotted overrides."""

from zmaj_lm.config.base import StrictModel
from zmaj_lm.config.generation import SamplingConfig
from zmaj_lm.config.loading import ConfigError, dump_config, load_config_as
from zmaj_lm.config.model import (
    LinearRopeScaling,
    Llama3RopeScaling,
    ModelConfig,
    MoEConfig,
    RopeConfig,
    YarnRopeScaling,
)
from zmaj_lm.config.root import Config, load_config

__all__ = [
    "Config",
    "ConfigError",
    "LinearRopeScaling",
    "Llama3RopeScaling",
    "MoEConfig",
    "ModelConfig",
    "RopeConfig",
    "SamplingConfig",
    "StrictModel",
    "YarnRopeScaling",
    "dump_config",
    "load_config",
    "load_config_as",
]
