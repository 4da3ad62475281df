"""The root config of a run: one section per layer of the package.

Data, training and fine-tuning sections join :class:`Config` as those subsystems land; a YAML file
holds one top-level key per section (``model:``, ...).
"""

from pathlib import Path

from zmaj_lm.config.base import StrictModel
from zmaj_lm.config.loading import load_config_as
from zmaj_lm.config.model import ModelConfig


class Config(StrictModel):
    """Everything a run needs, validated as a whole."""

    model: ModelConfig
    """The transformer architecture."""


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read ``path``, apply dotted ``overrides`` such as ``model.n_layers=4``, validate."""
    return load_config_as(Config, path, overrides)
