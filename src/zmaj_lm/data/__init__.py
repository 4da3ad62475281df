"""Tokenizers, corpora, token shards, packing and resumable loading.

Flow: a :class:`~zmaj_lm.config.data.SourceConfig` names a corpus (``sources``); a
:class:`Tokenizer` is trained or loaded (``tokenizer``); :func:`prepare_shards` writes token
shards with a manifest (``prepare``, ``shards``); :class:`PackedLoader` packs documents into
:class:`Batch` rows with document ids (``packing``, ``loader``).
"""

from zmaj_lm.data.batch import IGNORE_INDEX, Batch
from zmaj_lm.data.errors import DataError, ShardError, SourceError, TokenizerError
from zmaj_lm.data.loader import PackedLoader
from zmaj_lm.data.packing import PackPlan, build_batch, plan_rows
from zmaj_lm.data.prepare import prepare_shards
from zmaj_lm.data.shards import Manifest, ShardSet, SplitInfo, read_manifest, split_stats
from zmaj_lm.data.sources import iter_texts, split_of
from zmaj_lm.data.tokenizer import Tokenizer, train_bpe

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
