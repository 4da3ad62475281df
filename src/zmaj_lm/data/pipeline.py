"""From a :class:`~zmaj_lm.config.data.DataConfig` to a tokenizer, prepared shards and loaders.

This is what a training run calls::

    tokenizer, manifest = prepare_data(cfg.data)            # idempotent: fast when done
    train = make_loader(cfg.data, "train", rank=r, world_size=w)
    val = make_loader(cfg.data, "validation", rank=r, world_size=w)
    bpb = nats_per_token * manifest.split("validation").num_tokens / (num_bytes * ln 2)

The tokenizer is the configured file, or the configured Hub repository, or the one already in
``data_dir/tokenizer`` (when its vocabulary size matches), or else one trained on the source's
train split.
"""

from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from zmaj_lm.config.data import DataConfig
from zmaj_lm.data.prepare import TOKENIZER_DIR, prepare_shards
from zmaj_lm.data.shards import Manifest
from zmaj_lm.data.sources import Split, iter_texts
from zmaj_lm.data.tokenizer import TOKENIZER_FILE, Tokenizer, train_bpe

if TYPE_CHECKING:
    from zmaj_lm.data.loader import PackedLoader


def resolve_tokenizer(cfg: DataConfig, *, retrain: bool = False) -> Tokenizer:
    """The tokenizer ``cfg`` asks for (see the module docstring for the order of choices)."""
    if cfg.tokenizer is not None:
        return Tokenizer.load(cfg.tokenizer)
    if cfg.tokenizer_repo is not None:
        return Tokenizer.from_hub(cfg.tokenizer_repo, cfg.tokenizer_revision)
    existing = Path(cfg.data_dir) / TOKENIZER_DIR
    if not retrain and (existing / TOKENIZER_FILE).is_file():
        tokenizer = Tokenizer.load(existing)
        if tokenizer.vocab_size == cfg.vocab_size:
            return tokenizer
        logger.warning(
            "{}: vocab_size {} differs from the configured {}; training a new tokenizer",
            existing,
            tokenizer.vocab_size,
            cfg.vocab_size,
        )
    return train_bpe(
        iter_texts(cfg.source, "train"),
        cfg.vocab_size,
        cfg.special_tokens,
        max_bytes=cfg.tokenizer_train_bytes,
    )


def prepare_data(cfg: DataConfig, *, overwrite: bool = False) -> tuple[Tokenizer, Manifest]:
    """Resolve the tokenizer and prepare ``cfg.data_dir`` (a no-op when already complete)."""
    tokenizer = resolve_tokenizer(cfg, retrain=overwrite)
    manifest = prepare_shards(
        cfg.source,
        tokenizer,
        cfg.data_dir,
        shard_tokens=cfg.shard_tokens,
        add_bos=cfg.add_bos,
        num_workers=cfg.num_workers,
        overwrite=overwrite,
    )
    return tokenizer, manifest


def make_loader(
    cfg: DataConfig,
    split: Split = "train",
    *,
    rank: int = 0,
    world_size: int = 1,
    tokenizer_fingerprint: str | None = None,
    batch_size: int | None = None,
) -> "PackedLoader":
    """A loader over ``cfg.data_dir``: infinite and shuffled for ``train``, one ordered pass for
    ``validation``. ``batch_size`` defaults to ``cfg.batch_size``."""
    from zmaj_lm.data.loader import PackedLoader

    train = split == "train"
    return PackedLoader(
        cfg.data_dir,
        split=split,
        seq_len=cfg.seq_len,
        batch_size=cfg.batch_size if batch_size is None else batch_size,
        packing=cfg.packing,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        infinite=train,
        shuffle=cfg.shuffle and train,
        overflow=cfg.overflow,
        pack_window=cfg.pack_window,
        tokenizer_fingerprint=tokenizer_fingerprint,
    )
