"""Tokenizers, corpora, token shards, packing and resumable loading."""

from zmaj_lm.data.batch import IGNORE_INDEX, Batch

__all__ = ["IGNORE_INDEX", "Batch"]
