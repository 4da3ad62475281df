"""The root config of a run: one section per layer of the package.

A YAML file holds one top-level key per section (``model:``, ``data:``, ``training:``); only
``model`` is required, the others have defaults (the stdlib corpus, a short pretraining run).
"""

from pathlib import Path

from pydantic import Field

from zmaj_lm.config.base import StrictModel
from zmaj_lm.config.data import DataConfig
from zmaj_lm.config.loading import load_config_as
from zmaj_lm.config.model import ModelConfig
from zmaj_lm.config.training import TrainingConfig


class Config(StrictModel):
    """Everything a run needs, validated as a whole."""

    model: ModelConfig
    """The transformer architecture."""
    data: DataConfig = Field(default_factory=DataConfig)
    """Corpus, tokenizer, shards and packing (``data.batch_size`` rows per micro-batch)."""
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """Optimizer, schedule, precision, evaluation, checkpoints, logging."""


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read ``path``, apply dotted ``overrides`` such as ``model.n_layers=4``, validate."""
    return load_config_as(Config, path, overrides)
