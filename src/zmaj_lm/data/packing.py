"""Packing documents into rows of ``seq_len`` tokens, and turning rows into a :class:`Batch`.

A packing *plan* is computed from document lengths alone (no tokens are read): each row is a list
of *segments* ``(document, start, length)``. Three strategies:

* ``concat``: documents back to back, cut every ``seq_len`` tokens; a document may continue in the
  next row. Only the last row of an epoch is padded.
* ``best_fit``: documents of a window are placed whole into rows by best-fit decreasing (each
  piece into the fullest row it still fits). A document longer than a row is split into row-sized
  pieces (``overflow="split"``; each full piece is a row of its own, the remainder is packed) or
  cut to one row (``overflow="truncate"``; the dropped tokens are counted).
* ``pad``: one document (or piece) per row, padded.

Label convention (the "seq_len + 1" view): the label at a token is the *next token of the same
document*, whether or not that next token is in this row. So a segment cut at a row end still
predicts its continuation (which is the next row's first input), while the last token of a
document (its EOS) and padding get ``IGNORE_INDEX``. No label ever crosses into another document,
every within-document transition is predicted exactly once per epoch, and no token is the input
of two rows.

Inside a row, segments carry document ids 0, 1, 2, ... (padding -1), the source id of their
document (padding -1) when the corpus has them, and position ids that restart
at 0 at every segment: a piece of a document that continues from the previous row starts at
position 0 too, because the model cannot see its beginning (and absolute-position models never
see positions beyond ``seq_len``).
"""

import bisect
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from zmaj_lm.data.batch import IGNORE_INDEX, Batch

PackingKind = Literal["concat", "best_fit", "pad"]
Overflow = Literal["split", "truncate"]
TokenReader = Callable[[int, int, int], NDArray[Any]]
"""``read(doc, start, stop)``: tokens ``start:stop`` of document ``doc`` (stop clipped)."""


@dataclass(frozen=True)
class PackPlan:
    """Rows as segments in CSR form: row ``r`` holds segments ``row_ptr[r]:row_ptr[r + 1]``.

    ``seg_doc``, ``seg_start``, ``seg_len``: (S,) int64; ``row_ptr``: (R + 1,) int64.
    """

    seg_doc: NDArray[np.int64]
    seg_start: NDArray[np.int64]
    seg_len: NDArray[np.int64]
    row_ptr: NDArray[np.int64]
    seq_len: int
    truncated_tokens: int = 0

    @property
    def num_rows(self) -> int:
        """Rows in the plan."""
        return len(self.row_ptr) - 1

    @property
    def num_tokens(self) -> int:
        """Tokens placed in rows (not padding, not truncated)."""
        return int(self.seg_len.sum())

    @property
    def efficiency(self) -> float:
        """Non-padding fraction of all row slots."""
        slots = self.num_rows * self.seq_len
        return self.num_tokens / slots if slots else 1.0

    def row(self, r: int) -> list[tuple[int, int, int]]:
        """Segments ``(document, start, length)`` of row ``r``."""
        lo, hi = int(self.row_ptr[r]), int(self.row_ptr[r + 1])
        return [
            (int(self.seg_doc[i]), int(self.seg_start[i]), int(self.seg_len[i]))
            for i in range(lo, hi)
        ]


class _Builder:
    """Accumulates segments in compact ``array('q')`` buffers (8 bytes per value, not ~36 for a
    list of Python ints: an epoch of millions of documents stays small)."""

    def __init__(self, seq_len: int) -> None:
        self.seq_len = seq_len
        self.doc = array("q")
        self.start = array("q")
        self.length = array("q")
        self.row_ptr = array("q", [0])
        self.truncated = 0

    def add_row(self, segments: list[tuple[int, int, int]]) -> None:
        for d, s, n in segments:
            self.doc.append(d)
            self.start.append(s)
            self.length.append(n)
        self.row_ptr.append(len(self.doc))

    def build(self) -> PackPlan:
        return PackPlan(
            seg_doc=np.frombuffer(self.doc, dtype=np.int64).copy(),
            seg_start=np.frombuffer(self.start, dtype=np.int64).copy(),
            seg_len=np.frombuffer(self.length, dtype=np.int64).copy(),
            row_ptr=np.frombuffer(self.row_ptr, dtype=np.int64).copy(),
            seq_len=self.seq_len,
            truncated_tokens=self.truncated,
        )


def plan_concat(order: NDArray[np.int64], lengths: NDArray[np.int64], seq_len: int) -> PackPlan:
    """Documents ``order`` back to back, cut into rows of ``seq_len`` (last row padded)."""
    b = _Builder(seq_len)
    row: list[tuple[int, int, int]] = []
    free = seq_len
    for doc in order.tolist():
        n = int(lengths[doc])
        start = 0
        while start < n:
            take = min(free, n - start)
            row.append((doc, start, take))
            start += take
            free -= take
            if free == 0:
                b.add_row(row)
                row, free = [], seq_len
    if row:
        b.add_row(row)
    return b.build()


def _pieces(
    doc: int, n: int, seq_len: int, overflow: Overflow, b: _Builder
) -> list[tuple[int, int, int]]:
    """Split (or truncate) a document into pieces of at most ``seq_len`` tokens."""
    if n <= seq_len:
        return [(doc, 0, n)]
    if overflow == "truncate":
        b.truncated += n - seq_len
        return [(doc, 0, seq_len)]
    return [(doc, s, min(seq_len, n - s)) for s in range(0, n, seq_len)]


def plan_pad(
    order: NDArray[np.int64], lengths: NDArray[np.int64], seq_len: int, overflow: Overflow
) -> PackPlan:
    """One document (or piece of one) per row."""
    b = _Builder(seq_len)
    for doc in order.tolist():
        for piece in _pieces(doc, int(lengths[doc]), seq_len, overflow, b):
            b.add_row([piece])
    return b.build()


def plan_best_fit(
    order: NDArray[np.int64],
    lengths: NDArray[np.int64],
    seq_len: int,
    overflow: Overflow,
    window: int,
    rng: np.random.Generator | None = None,
) -> PackPlan:
    """Best-fit decreasing over windows of ``window`` documents taken in ``order``.

    Within a window, pieces are placed longest first into the row with the least free space
    that still holds them (a sorted list of free capacities, O(log R) lookup). Rows of a window
    are shuffled with ``rng`` when given, so long documents do not always come first.
    """
    b = _Builder(seq_len)
    docs = order.tolist()
    for lo in range(0, len(docs), window):
        items: list[tuple[int, int, int]] = []
        full_rows: list[list[tuple[int, int, int]]] = []
        for doc in docs[lo : lo + window]:
            for piece in _pieces(doc, int(lengths[doc]), seq_len, overflow, b):
                if piece[2] == seq_len:
                    full_rows.append([piece])
                else:
                    items.append(piece)
        items.sort(key=lambda p: -p[2])
        bins: list[list[tuple[int, int, int]]] = []
        free: list[tuple[int, int]] = []
        for piece in items:
            size = piece[2]
            i = bisect.bisect_left(free, (size, -1))
            if i < len(free):
                room, k = free.pop(i)
            else:
                k, room = len(bins), seq_len
                bins.append([])
            bins[k].append(piece)
            if room - size > 0:
                bisect.insort(free, (room - size, k))
        rows = full_rows + bins
        if rng is not None:
            rows = [rows[i] for i in rng.permutation(len(rows))]
        for row in rows:
            b.add_row(row)
    return b.build()


def plan_rows(
    packing: PackingKind,
    order: NDArray[np.int64],
    lengths: NDArray[np.int64],
    seq_len: int,
    *,
    overflow: Overflow = "split",
    window: int = 4096,
    rng: np.random.Generator | None = None,
) -> PackPlan:
    """The plan of ``packing`` for documents ``order`` (indices into ``lengths``)."""
    if packing == "concat":
        return plan_concat(order, lengths, seq_len)
    if packing == "pad":
        return plan_pad(order, lengths, seq_len, overflow)
    if packing == "best_fit":
        return plan_best_fit(order, lengths, seq_len, overflow, window, rng)
    raise ValueError(f"unknown packing {packing!r}")


def build_batch(
    rows: list[list[tuple[int, int, int]]],
    read: TokenReader,
    seq_len: int,
    pad_id: int,
    sources: NDArray[Any] | None = None,
) -> Batch:
    """Materialise rows of segments into a :class:`Batch` (all tensors (len(rows), seq_len)).

    ``read`` fetches tokens; one extra token past each segment is read to label its last
    position when the document continues (see the module docstring). ``sources`` (N,) holds
    each document's source id; without it the batch has no ``source_ids``.
    """
    B = len(rows)
    input_ids = np.full((B, seq_len), pad_id, dtype=np.int64)
    labels = np.full((B, seq_len), IGNORE_INDEX, dtype=np.int64)
    document_ids = np.full((B, seq_len), -1, dtype=np.int64)
    position_ids = np.zeros((B, seq_len), dtype=np.int64)
    source_ids = np.full((B, seq_len), -1, dtype=np.int64) if sources is not None else None
    for r, row in enumerate(rows):
        pos = 0
        for j, (doc, start, n) in enumerate(row):
            toks = read(doc, start, start + n + 1)
            end = pos + n
            input_ids[r, pos:end] = toks[:n]
            labels[r, pos : end - 1] = toks[1:n]
            if len(toks) > n:
                labels[r, end - 1] = toks[n]
            document_ids[r, pos:end] = j
            position_ids[r, pos:end] = np.arange(n)
            if source_ids is not None and sources is not None:
                source_ids[r, pos:end] = sources[doc]
            pos = end
    return Batch(
        input_ids=torch.from_numpy(input_ids),
        labels=torch.from_numpy(labels),
        document_ids=torch.from_numpy(document_ids),
        position_ids=torch.from_numpy(position_ids),
        loss_mask=torch.from_numpy(labels != IGNORE_INDEX),
        source_ids=torch.from_numpy(source_ids) if source_ids is not None else None,
    )
