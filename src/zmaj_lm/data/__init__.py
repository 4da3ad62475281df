"""Tokenizers, corpora, token shards, packing and resumable loading.

Flow: a :class:`~zmaj_lm.config.data.SourceConfig` names a corpus (``sources``); a
:class:`Tokenizer` is trained or loaded (``tokenizer``); :func:`prepare_shards` writes token
shards with a manifest (``prepare``, ``shards``); :class:`PackedLoader` packs documents into
:class:`Batch` rows with document ids (``packing``, ``loader``).

Names are imported lazily, so ``scripts/prepare_data.py`` (which needs no torch) starts fast.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zmaj_lm.data.batch import IGNORE_INDEX, Batch
    from zmaj_lm.data.errors import DataError, ShardError, SourceError, TokenizerError
    from zmaj_lm.data.loader import PackedLoader
    from zmaj_lm.data.packing import PackPlan, build_batch, plan_rows
    from zmaj_lm.data.prepare import prepare_shards
    from zmaj_lm.data.shards import Manifest, ShardSet, SplitInfo, read_manifest, split_stats
    from zmaj_lm.data.sources import iter_texts, split_of
    from zmaj_lm.data.tokenizer import Tokenizer, train_bpe

_WHERE = {
    "IGNORE_INDEX": "batch",
    "Batch": "batch",
    "DataError": "errors",
    "ShardError": "errors",
    "SourceError": "errors",
    "TokenizerError": "errors",
    "PackedLoader": "loader",
    "PackPlan": "packing",
    "build_batch": "packing",
    "plan_rows": "packing",
    "prepare_shards": "prepare",
    "Manifest": "shards",
    "ShardSet": "shards",
    "SplitInfo": "shards",
    "read_manifest": "shards",
    "split_stats": "shards",
    "iter_texts": "sources",
    "split_of": "sources",
    "Tokenizer": "tokenizer",
    "train_bpe": "tokenizer",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"zmaj_lm.data.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'zmaj_lm.data' has no attribute {name!r}")


__all__ = [
    "IGNORE_INDEX",
    "Batch",
    "DataError",
    "Manifest",
    "PackPlan",
    "PackedLoader",
    "ShardError",
    "ShardSet",
    "SourceError",
    "SplitInfo",
    "Tokenizer",
    "TokenizerError",
    "build_batch",
    "iter_texts",
    "plan_rows",
    "prepare_shards",
    "read_manifest",
    "split_of",
    "split_stats",
    "train_bpe",
]
