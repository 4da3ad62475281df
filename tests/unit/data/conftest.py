"""Shared fixtures: a small tokenizer trained on local text, and small prepared corpora."""

from itertools import islice
from pathlib import Path

import pytest

from zmaj_lm.config.data import SourceConfig
from zmaj_lm.data.prepare import prepare_shards
from zmaj_lm.data.shards import Manifest
from zmaj_lm.data.sources import iter_texts
from zmaj_lm.data.tokenizer import Tokenizer, train_bpe


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    """Byte-level BPE with 512 ids trained on ~300 KB of the stdlib corpus (well under 1 s)."""
    texts = islice(iter_texts(SourceConfig(kind="stdlib"), "train"), 40)
    return train_bpe(texts, 512, max_bytes=300_000)


@pytest.fixture(scope="session")
def arithmetic_source() -> SourceConfig:
    """4,000 short documents of varied length (7-12 characters, ~6 tokens each)."""
    return SourceConfig(kind="arithmetic", num_documents=4000, validation_fraction=0.1)


@pytest.fixture(scope="session")
def prepared(
    tmp_path_factory: pytest.TempPathFactory, tokenizer: Tokenizer, arithmetic_source: SourceConfig
) -> tuple[Path, Manifest]:
    """The arithmetic corpus prepared into several small shards (read-only for tests)."""
    out = tmp_path_factory.mktemp("prepared")
    manifest = prepare_shards(arithmetic_source, tokenizer, out, shard_tokens=5000)
    return out, manifest
