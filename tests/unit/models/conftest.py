"""Tiny model configs shared by the model tests."""

from collections.abc import Callable
from typing import Any

import pytest

from zmaj_lm.config import ModelConfig

TINY: dict[str, Any] = {
    "vocab_size": 97,
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 4,
    "n_kv_heads": 2,
    "d_ff": 96,
    "max_seq_len": 128,
}


def tiny_config(**overrides: Any) -> ModelConfig:
    """A 2-layer, 64-wide config with GQA; ``overrides`` replace fields."""
    return ModelConfig.model_validate({**TINY, **overrides})


@pytest.fixture
def make_config() -> Callable[..., ModelConfig]:
    return tiny_config
