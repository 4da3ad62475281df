"""Deterministic, resumable, rank-sharded iteration over packed batches of memory-mapped shards.

Order of epoch ``e``: documents are permuted by ``default_rng([seed, e])`` (identically on every
rank), rank ``r`` of ``w`` takes every ``w``-th document starting at ``r`` (disjoint, and their
union is every document), and its documents are packed into rows (``best_fit`` rows are shuffled
within each window by ``default_rng([seed, e, 1])``). The position in the stream is just
``(epoch, row)``, so :meth:`PackedLoader.state_dict` is two integers plus the settings that define
the stream, and a restarted run continues at exactly the next batch.

Training iterates forever (a batch may span the end of one epoch and the start of the next);
validation (``infinite=False``) makes one pass and ends with a possibly smaller last batch, and
the next ``iter()`` starts a fresh pass. Ranks can get different numbers of rows per epoch (their
documents differ in length), so a data-parallel validation loop should reduce sums, not count on
equal batch numbers.
"""

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from loguru import logger
from numpy.typing import NDArray

from zmaj_lm.data.batch import Batch
from zmaj_lm.data.errors import ShardError
from zmaj_lm.data.packing import Overflow, PackingKind, PackPlan, build_batch, plan_rows
from zmaj_lm.data.shards import ShardSet


def rank_documents(
    num_documents: int, epoch: int, seed: int, rank: int, world_size: int, shuffle: bool = True
) -> NDArray[np.int64]:
    """Document indices of ``rank`` in ``epoch``: a slice of the epoch's shared permutation."""
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(num_documents)
    else:
        order = np.arange(num_documents)
    return order[rank::world_size].astype(np.int64)


class PackedLoader:
    """Iterable of :class:`Batch` (``batch_size`` rows of ``seq_len`` tokens) from prepared shards.

    ``shard_dir`` is a directory made by :func:`~zmaj_lm.data.prepare.prepare_shards` (or one of
    its split directories); ``split`` picks ``train`` or ``validation``. With
    ``tokenizer_fingerprint`` given, data prepared with another tokenizer is refused. Batches
    carry ``source_ids`` indexing :attr:`source_names`.
    """

    def __init__(
        self,
        shard_dir: str | os.PathLike[str],
        *,
        seq_len: int,
        batch_size: int,
        packing: PackingKind = "best_fit",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        infinite: bool = True,
        tokenizer_fingerprint: str | None = None,
        split: str = "train",
        shuffle: bool = True,
        overflow: Overflow = "split",
        pack_window: int = 4096,
        pad_id: int | None = None,
        verify_checksums: bool = True,
    ) -> None:
        if seq_len < 2 or batch_size < 1:
            raise ValueError(
                f"seq_len must be >= 2 and batch_size >= 1, got {seq_len}, {batch_size}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(
                f"rank must be in [0, world_size), got rank={rank}, world={world_size}"
            )
        self.shards = ShardSet(
            shard_dir,
            split,
            tokenizer_fingerprint=tokenizer_fingerprint,
            verify_checksums=verify_checksums,
        )
        if self.shards.num_documents < world_size:
            raise ShardError(
                f"{self.shards.out_dir / self.shards.split}: {self.shards.num_documents} "
                f"documents cannot feed {world_size} ranks"
            )
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.packing: PackingKind = packing
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.infinite = infinite
        self.shuffle = shuffle
        self.overflow: Overflow = overflow
        self.pack_window = pack_window
        self.pad_id = self.shards.manifest.eos_id if pad_id is None else pad_id
        self.epoch = 0
        self.row = 0
        self._plan: PackPlan | None = None
        self._plan_epoch = -1

    def plan(self, epoch: int) -> PackPlan:
        """This rank's packing plan for ``epoch`` (cached for the current epoch)."""
        if self._plan is None or self._plan_epoch != epoch:
            docs = rank_documents(
                self.shards.num_documents,
                epoch,
                self.seed,
                self.rank,
                self.world_size,
                self.shuffle,
            )
            rng = np.random.default_rng([self.seed, epoch, 1]) if self.shuffle else None
            self._plan = plan_rows(
                self.packing,
                docs,
                self.shards.lengths,
                self.seq_len,
                overflow=self.overflow,
                window=self.pack_window,
                rng=rng,
            )
            self._plan_epoch = epoch
            logger.info(
                "{} rank {}/{} epoch {}: {} rows, packing efficiency {:.1%}",
                self.shards.split,
                self.rank,
                self.world_size,
                epoch,
                self._plan.num_rows,
                self._plan.efficiency,
            )
        return self._plan

    @property
    def source_names(self) -> list[str]:
        """Name of each source id in ``batch.source_ids`` (from the manifest)."""
        return self.shards.source_names

    @property
    def efficiency(self) -> float:
        """Non-padding fraction of the current epoch's rows on this rank."""
        return self.plan(self.epoch).efficiency

    @property
    def batches_per_epoch(self) -> int:
        """Batches in one pass (the last may be smaller); the length of a validation pass."""
        return -(-self.plan(0).num_rows // self.batch_size)

    def __len__(self) -> int:
        if self.infinite:
            raise TypeError("an infinite PackedLoader has no length")
        return self.batches_per_epoch

    def _read(self, doc: int, start: int, stop: int) -> NDArray[Any]:
        return self.shards.tokens(doc, start, stop)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            rows: list[list[tuple[int, int, int]]] = []
            while len(rows) < self.batch_size:
                plan = self.plan(self.epoch)
                if self.row >= plan.num_rows:
                    if not self.infinite:
                        break
                    self.epoch += 1
                    self.row = 0
                    continue
                rows.append(plan.row(self.row))
                self.row += 1
            if not rows:
                self.epoch, self.row = 0, 0
                return
            yield build_batch(rows, self._read, self.seq_len, self.pad_id, self.shards.source_ids)

    def _stream_key(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "seq_len": self.seq_len,
            "packing": self.packing,
            "overflow": self.overflow,
            "pack_window": self.pack_window,
            "shuffle": self.shuffle,
            "split": self.shards.split,
            "num_documents": self.shards.num_documents,
            "tokenizer_fingerprint": self.shards.manifest.tokenizer_fingerprint,
        }

    def state_dict(self) -> dict[str, Any]:
        """Position of the next batch plus the settings that define the stream (plain types)."""
        return {"epoch": self.epoch, "row": self.row, **self._stream_key()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at ``state``'s position; refuses a state from a different stream.

        ``batch_size`` may differ: the position is counted in rows.
        """
        mine = self._stream_key()
        diffs = [
            f"{k}={state.get(k)!r} (loader has {v!r})" for k, v in mine.items() if state.get(k) != v
        ]
        if diffs:
            raise ValueError("loader state is from a different data stream: " + ", ".join(diffs))
        self.epoch = int(state["epoch"])
        self.row = int(state["row"])
