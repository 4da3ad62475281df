"""A byte-level tokenizer with the chat special tokens, tiny models and checkpoints on disk."""

from pathlib import Path
from typing import Any

import pytest
import torch

from zmaj_lm.config.model import ModelConfig
from zmaj_lm.data.tokenizer import Tokenizer, train_bpe
from zmaj_lm.models.io import save_model
from zmaj_lm.models.transformer import Transformer
from zmaj_lm.posttrain.chat import BUILTIN_TEMPLATE, ChatFormat

VOCAB = 264


def byte_tokenizer() -> Tokenizer:
    """256 bytes + the 7 default special tokens, no merges: every digit is one token."""
    return train_bpe(["0123456789+-*= abc"] * 4, 263)


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return byte_tokenizer()


@pytest.fixture(scope="session")
def chat(tokenizer: Tokenizer) -> ChatFormat:
    return ChatFormat(tokenizer, BUILTIN_TEMPLATE)


def tiny_config(**overrides: Any) -> ModelConfig:
    base: dict[str, Any] = {
        "vocab_size": VOCAB,
        "d_model": 32,
        "n_layers": 2,
        "n_heads": 4,
        "d_ff": 64,
        "max_seq_len": 48,
        "tie_embeddings": False,
    }
    base.update(overrides)
    return ModelConfig(**base)


def tiny_model(seed: int = 0, **overrides: Any) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(tiny_config(**overrides))


def save_init(path: Path, tokenizer: Tokenizer | None = None, **overrides: Any) -> Path:
    """A random tiny model (seed 0) saved as an init checkpoint: weights, config, tokenizer/."""
    save_model(tiny_model(**overrides), path)
    (tokenizer or byte_tokenizer()).save(path / "tokenizer")
    return path


@pytest.fixture
def checkpoint(tmp_path: Path, tokenizer: Tokenizer) -> Path:
    return save_init(tmp_path / "init", tokenizer)
