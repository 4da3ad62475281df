"""The transformer, its building blocks, attention backends and generation."""

from zmaj_lm.models.cache import KVCache
from zmaj_lm.models.generation import generate
from zmaj_lm.models.masks import AttentionMask, position_ids_from_documents
from zmaj_lm.models.transformer import ModelOutput, Transformer

__all__ = [
    "AttentionMask",
    "KVCache",
    "ModelOutput",
    "Transformer",
    "generate",
    "position_ids_from_documents",
]
