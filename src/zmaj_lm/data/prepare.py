"""Tokenise a source into train/validation shards: streaming, parallel, idempotent, crash-safe.

The source is read once, in order, in batches of documents; batches are tokenised by a thread
pool (``tokenizers`` releases the GIL) with a bounded number in flight, and documents are appended
to the current shard of their split until it reaches ``shard_tokens``. Tokens are streamed into the
shard's temporary file as they come, so memory is bounded by the batches in flight (and one
offset per document of the open shards), whatever the corpus or shard size.

Every shard is written under a temporary name and renamed; the manifest is rewritten (atomically)
after each shard, listing only finished ones. A re-run

* of a complete directory whose shards all match the manifest writes nothing;
* after a crash resumes after the last listed shard of each split (earlier documents are read but
  not tokenised);
* rebuilds a missing, truncated or corrupt shard from the raw-document range the manifest records
  for it (documents are assigned to shards deterministically, so the rebuilt shard must have the
  recorded checksum);
* refuses a directory prepared with another tokenizer, source or shard settings (``overwrite``
  replaces it instead).

Each document's source label (see :mod:`zmaj_lm.data.sources`) becomes a small id stored beside
the shard's offsets (``<name>.src.npy``); ids are numbered in order of first appearance in the
raw stream, which a re-run replays, so resumed and rebuilt shards get the same ids. A directory
prepared before source ids existed is completed in place: the source is read again (not
tokenised) and the id files of its listed shards are written before anything else happens; the
token shards are not touched.
"""

import hashlib
import os
import shutil
import tempfile
import time
from array import array
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from loguru import logger

from zmaj_lm.config.data import SourceConfig
from zmaj_lm.data.errors import ShardError
from zmaj_lm.data.shards import (
    MAX_SOURCES,
    OTHER_SOURCE,
    SOURCE_DTYPE,
    Manifest,
    ShardInfo,
    SplitInfo,
    manifest_path,
    read_manifest,
    sha256_file,
    shard_problem,
    token_dtype,
    write_manifest,
)
from zmaj_lm.data.sources import SPLITS, is_empty, iter_labelled, source_fingerprint, split_of
from zmaj_lm.data.tokenizer import TOKENIZER_FILE, Tokenizer
from zmaj_lm.utils.io import atomic_path, fsync_dir

TOKENIZER_DIR = "tokenizer"


@dataclass
class _Item:
    raw: int
    split: str
    text: str
    source: int
    rebuild: int | None


class _SourceIds:
    """Source label -> id in order of first appearance, continuing from ``names``.

    Labels beyond the first ``MAX_SOURCES - 1`` share the id of ``OTHER_SOURCE``, so ids fit
    ``SOURCE_DTYPE`` and the breakdown stays readable.
    """

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self._ids = {name: i for i, name in enumerate(self.names)}
        self._warned = False

    def id(self, label: str) -> int:
        known = self._ids.get(label)
        if known is not None:
            return known
        if len(self.names) >= MAX_SOURCES - 1:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "more than {} distinct source labels; {!r} and later new labels count as {!r}",
                    MAX_SOURCES - 1,
                    label,
                    OTHER_SOURCE,
                )
            label = OTHER_SOURCE
            known = self._ids.get(label)
            if known is not None:
                return known
        self._ids[label] = len(self.names)
        self.names.append(label)
        return self._ids[label]


def _write_sources(path: Path, ids: "array[int]") -> str:
    """Write one shard's source ids (num_documents,) atomically; return the file's sha256."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.frombuffer(ids, dtype=SOURCE_DTYPE))
    return sha256_file(path)


class _ShardWriter:
    """Streams one shard's tokens to a hidden temporary file; :meth:`finish` renames it.

    Tokens go to disk document by document (hashed on the way), so memory does not grow with
    ``shard_tokens``; only the document offsets stay in memory until the index is written.
    """

    def __init__(self, split_dir: Path, name: str, raw_start: int, dtype: str) -> None:
        split_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.bin.", suffix=".tmp", dir=split_dir)
        self.file = os.fdopen(fd, "wb")
        self.tmp = Path(tmp)
        self.split_dir = split_dir
        self.name = name
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.hash = hashlib.sha256()
        self.offsets = [0]
        self.sources: array[int] = array("B")
        self.num_bytes = 0
        self.raw_start = raw_start
        self.raw_end = raw_start

    @property
    def num_documents(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        return self.offsets[-1]

    def add(self, raw: int, tokens: list[int], num_bytes: int, source: int) -> None:
        data = np.asarray(tokens, dtype=self.dtype).tobytes()
        self.file.write(data)
        self.hash.update(data)
        self.offsets.append(self.offsets[-1] + len(tokens))
        self.sources.append(source)
        self.num_bytes += num_bytes
        self.raw_end = raw + 1

    def finish(self) -> ShardInfo:
        """Publish ``<name>.src.npy``, ``<name>.idx.npy`` then ``<name>.bin`` (each atomically);
        the manifest entry."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        source_sha256 = _write_sources(self.split_dir / f"{self.name}.src.npy", self.sources)
        offsets = np.asarray(self.offsets, dtype=np.int64)
        idx_path = self.split_dir / f"{self.name}.idx.npy"
        with atomic_path(idx_path) as tmp, open(tmp, "wb") as f:
            np.save(f, offsets)
        os.replace(self.tmp, self.split_dir / f"{self.name}.bin")
        fsync_dir(self.split_dir)
        return ShardInfo(
            name=self.name,
            num_tokens=self.num_tokens,
            num_documents=self.num_documents,
            num_bytes=self.num_bytes,
            size_bytes=self.num_tokens * self.dtype.itemsize,
            sha256=self.hash.hexdigest(),
            index_sha256=sha256_file(idx_path),
            source_sha256=source_sha256,
            raw_start=self.raw_start,
            raw_end=self.raw_end,
        )

    def abort(self) -> None:
        """Drop the temporary file (an interrupted run leaves no partial shard)."""
        self.file.close()
        self.tmp.unlink(missing_ok=True)


@dataclass
class _SplitState:
    shards: list[ShardInfo]
    bad: dict[int, _ShardWriter]
    covered_end: int
    current: _ShardWriter | None = None


def _batches(
    source: SourceConfig,
    states: dict[str, _SplitState],
    stop_at: int | None,
    counts: dict[str, int],
    batch_docs: int,
    batch_bytes: int,
    source_ids: _SourceIds,
) -> Iterator[list[_Item]]:
    """Raw documents that need tokenising, in order, grouped into batches.

    Every kept document's label is numbered, also when its shard is already done, so that ids
    follow first appearance in the whole stream whichever shards a run writes.
    """
    batch: list[_Item] = []
    size = 0
    pointers = dict.fromkeys(states, 0)
    for raw, (doc, label) in enumerate(iter_labelled(source)):
        if stop_at is not None and raw >= stop_at:
            break
        counts["raw"] += 1
        if doc is None:
            counts["undecodable"] += 1
            continue
        if is_empty(doc):
            counts["empty"] += 1
            continue
        split = split_of(doc, source.validation_fraction)
        sid = source_ids.id(label)
        st = states[split]
        rebuild: int | None = None
        if raw < st.covered_end:
            k = pointers[split]
            while st.shards[k].raw_end <= raw:
                k += 1
            pointers[split] = k
            if k not in st.bad:
                continue
            rebuild = k
        batch.append(_Item(raw, split, doc, sid, rebuild))
        size += len(doc)
        if len(batch) >= batch_docs or size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def prepare_shards(
    source_cfg: SourceConfig,
    tokenizer: Tokenizer,
    out_dir: str | os.PathLike[str],
    *,
    shard_tokens: int = 1 << 22,
    add_bos: bool = False,
    num_workers: int = 2,
    batch_docs: int = 512,
    batch_bytes: int = 1 << 20,
    overwrite: bool = False,
) -> Manifest:
    """Tokenise ``source_cfg`` into ``out_dir/{train,validation}/shard_*.bin``; return the manifest.

    Each document becomes ``[BOS] + encode(text) + [EOS]`` (BOS only with ``add_bos``); special
    token strings inside the text are encoded as plain text. The tokenizer is saved to
    ``out_dir/tokenizer/`` when absent. See the module docstring for re-run behaviour.
    """
    out_dir = Path(out_dir)
    if add_bos and tokenizer.bos_id is None:
        raise ShardError(f"{tokenizer.source}: add_bos is set but the tokenizer has no BOS token")
    dtype = token_dtype(tokenizer.vocab_size)
    src_fp = source_fingerprint(source_cfg)
    existing = read_manifest(out_dir)
    if existing is not None and overwrite:
        for split in SPLITS:
            shutil.rmtree(out_dir / split, ignore_errors=True)
        shutil.rmtree(out_dir / TOKENIZER_DIR, ignore_errors=True)
        manifest_path(out_dir).unlink()
        existing = None
    bos_id = tokenizer.bos_id if add_bos else None
    if existing is not None:
        _check_compatible(existing, out_dir, tokenizer, src_fp, shard_tokens, bos_id)
        if existing.source_names is None:
            existing = _add_source_ids(source_cfg, out_dir, existing)
    tok_dir = out_dir / TOKENIZER_DIR
    if not (tok_dir / TOKENIZER_FILE).is_file():
        tokenizer.save(tok_dir)

    states: dict[str, _SplitState] = {}
    for split in SPLITS:
        shards = list(existing.split(split).shards) if existing is not None else []
        split_dir = out_dir / split
        if split_dir.is_dir():
            for stale in split_dir.glob(".shard_*.tmp"):
                stale.unlink()
        bad: dict[int, _ShardWriter] = {}
        for k, info in enumerate(shards):
            problem = shard_problem(out_dir / split, info)
            if problem is not None:
                logger.warning("{}; rebuilding it", problem)
                bad[k] = _ShardWriter(split_dir, info.name, info.raw_start, dtype)
        covered = shards[-1].raw_end if shards else 0
        states[split] = _SplitState(shards, bad, covered)

    any_bad = any(st.bad for st in states.values())
    if existing is not None and existing.complete and not any_bad:
        logger.info("{}: already prepared, nothing to do", out_dir)
        return existing

    manifest = existing or Manifest(
        tokenizer_fingerprint=tokenizer.fingerprint,
        vocab_size=tokenizer.vocab_size,
        dtype=dtype,
        eos_id=tokenizer.eos_id,
        bos_id=bos_id,
        source=source_cfg.model_dump(mode="json"),
        source_fingerprint=src_fp,
        shard_tokens=shard_tokens,
        source_names=[],
    )
    source_ids = _SourceIds(manifest.source_names or [])
    complete_before = existing is not None and existing.complete
    stop_at: int | None = None
    if complete_before:
        stop_at = max(st.shards[k].raw_end for st in states.values() for k in st.bad)
    counts = {"raw": 0, "empty": 0, "undecodable": 0}
    prefix = [bos_id] if bos_id is not None else []
    eos = tokenizer.eos_id
    started = time.perf_counter()
    new_tokens = 0

    def snapshot(complete: bool) -> Manifest:
        splits = {s: _split_info(states[s].shards) for s in SPLITS}
        update: dict[str, object] = {
            "splits": splits,
            "complete": complete,
            "source_names": list(source_ids.names),
        }
        if complete and not complete_before:
            update |= {
                "raw_documents": counts["raw"],
                "skipped_empty": counts["empty"],
                "skipped_undecodable": counts["undecodable"],
            }
        return manifest.model_copy(update=update)

    def flush_new(split: str) -> None:
        st = states[split]
        writer = st.current
        if writer is None:
            return
        info = writer.finish()
        st.current = None
        st.shards.append(info)
        st.covered_end = info.raw_end
        write_manifest(out_dir, snapshot(complete=False))
        logger.info(
            "{}/{}: {} documents, {} tokens", split, info.name, info.num_documents, info.num_tokens
        )

    def finish_rebuild(split: str, k: int) -> None:
        st = states[split]
        expected = st.shards[k]
        writer = st.bad.pop(k)
        writer.raw_end = expected.raw_end
        info = writer.finish()
        if info != expected:
            raise ShardError(
                f"{out_dir / split / expected.name}.bin: rebuilt shard differs from the manifest "
                "(the source changed?); prepare again with --overwrite"
            )
        logger.info("{}/{}: rebuilt", split, expected.name)

    def consume(items: list[_Item], ids: list[list[int]]) -> None:
        nonlocal new_tokens
        for item, toks in zip(items, ids, strict=True):
            doc = [*prefix, *toks, eos]
            nbytes = len(item.text.encode("utf-8"))
            st = states[item.split]
            if item.rebuild is not None:
                if item.rebuild not in st.bad:
                    raise ShardError(
                        f"{out_dir / item.split / st.shards[item.rebuild].name}.bin: the source "
                        "has more documents in its range than the manifest records; prepare "
                        "again with --overwrite"
                    )
                writer = st.bad[item.rebuild]
                writer.add(item.raw, doc, nbytes, item.source)
                if writer.num_documents == st.shards[item.rebuild].num_documents:
                    finish_rebuild(item.split, item.rebuild)
                continue
            if st.current is None:
                name = f"shard_{len(st.shards):05d}"
                st.current = _ShardWriter(out_dir / item.split, name, st.covered_end, dtype)
            st.current.add(item.raw, doc, nbytes, item.source)
            new_tokens += len(doc)
            if st.current.num_tokens >= shard_tokens:
                flush_new(item.split)

    try:
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            pending: deque[tuple[list[_Item], Future[list[list[int]]]]] = deque()
            for batch in _batches(
                source_cfg, states, stop_at, counts, batch_docs, batch_bytes, source_ids
            ):
                texts = [item.text for item in batch]
                pending.append((batch, pool.submit(tokenizer.encode_batch, texts, special=False)))
                while len(pending) > num_workers:
                    items, fut = pending.popleft()
                    consume(items, fut.result())
            while pending:
                items, fut = pending.popleft()
                consume(items, fut.result())
        for split in SPLITS:
            st = states[split]
            for k in st.bad:
                raise ShardError(
                    f"{out_dir / split / st.shards[k].name}.bin: cannot rebuild: the source no "
                    "longer has its documents; prepare again with --overwrite"
                )
            flush_new(split)
    except BaseException:
        for st in states.values():
            for writer in [st.current, *st.bad.values()]:
                if writer is not None:
                    writer.abort()
        raise
    final = snapshot(complete=True)
    if final != existing:
        write_manifest(out_dir, final)
    elapsed = time.perf_counter() - started
    logger.info(
        "{}: prepared {} new tokens in {:.1f}s ({:.0f} tokens/s); train {} / validation {} tokens",
        out_dir,
        new_tokens,
        elapsed,
        new_tokens / max(elapsed, 1e-9),
        final.split("train").num_tokens,
        final.split("validation").num_tokens,
    )
    return final


def _add_source_ids(source_cfg: SourceConfig, out_dir: Path, existing: Manifest) -> Manifest:
    """Write the ``.src.npy`` of every shard a pre-source-id manifest lists; the new manifest.

    Nothing is tokenised: a split's shards hold its kept documents in raw order, so the source is
    replayed and each kept document's id goes to the next unfilled shard of its split. Each id
    file is written atomically and the manifest last, so an interrupted upgrade is redone.
    """
    where = manifest_path(out_dir)
    hint = "prepare again with --overwrite"
    listed: dict[str, list[ShardInfo]] = {s: list(existing.split(s).shards) for s in SPLITS}
    done: dict[str, list[ShardInfo]] = {split: [] for split in SPLITS}
    pending: dict[str, array[int]] = {split: array("B") for split in SPLITS}
    source_ids = _SourceIds([])
    end = max((s.raw_end for shards in listed.values() for s in shards), default=0)

    def flush(split: str) -> None:
        while len(done[split]) < len(listed[split]):
            info = listed[split][len(done[split])]
            if len(pending[split]) < info.num_documents:
                return
            sha = _write_sources(out_dir / split / f"{info.name}.src.npy", pending[split])
            done[split].append(info.model_copy(update={"source_sha256": sha}))
            pending[split] = array("B")

    for split in SPLITS:
        flush(split)
    for raw, (doc, label) in enumerate(iter_labelled(source_cfg)):
        if raw >= end:
            break
        if doc is None or is_empty(doc):
            continue
        split = split_of(doc, source_cfg.validation_fraction)
        sid = source_ids.id(label)
        if len(done[split]) == len(listed[split]):
            continue
        info = listed[split][len(done[split])]
        if not info.raw_start <= raw < info.raw_end:
            raise ShardError(
                f"{where}: raw document {raw} does not fall in {split}/{info.name} as recorded "
                f"(the source changed?); {hint}"
            )
        pending[split].append(sid)
        flush(split)
    for split in SPLITS:
        if len(done[split]) < len(listed[split]):
            raise ShardError(
                f"{where}: the source no longer has the documents of "
                f"{split}/{listed[split][len(done[split])].name}; {hint}"
            )
    splits = {
        name: info.model_copy(update={"shards": done[name]})
        for name, info in existing.splits.items()
    }
    upgraded = existing.model_copy(
        update={"splits": splits, "source_names": list(source_ids.names)}
    )
    write_manifest(out_dir, upgraded)
    logger.info(
        "{}: added source ids ({} sources) to {} shards prepared without them",
        out_dir,
        len(source_ids.names),
        sum(len(v) for v in done.values()),
    )
    return upgraded


def _split_info(shards: list[ShardInfo]) -> SplitInfo:
    return SplitInfo(
        num_tokens=sum(s.num_tokens for s in shards),
        num_documents=sum(s.num_documents for s in shards),
        num_bytes=sum(s.num_bytes for s in shards),
        shards=list(shards),
    )


def _check_compatible(
    existing: Manifest,
    out_dir: Path,
    tokenizer: Tokenizer,
    src_fp: str,
    shard_tokens: int,
    bos_id: int | None,
) -> None:
    where = manifest_path(out_dir)
    hint = "use another output directory or --overwrite"
    if existing.tokenizer_fingerprint != tokenizer.fingerprint:
        raise ShardError(
            f"{where}: shards were prepared with tokenizer {existing.tokenizer_fingerprint[:12]}, "
            f"not with this tokenizer {tokenizer.fingerprint[:12]}; {hint}"
        )
    if existing.source_fingerprint != src_fp:
        raise ShardError(
            f"{where}: shards were prepared from another source or source version; {hint}"
        )
    if existing.shard_tokens != shard_tokens:
        raise ShardError(
            f"{where}: shards were prepared with shard_tokens={existing.shard_tokens}, "
            f"not {shard_tokens}; {hint}"
        )
    if existing.bos_id != bos_id:
        raise ShardError(
            f"{where}: shards were prepared with add_bos={existing.bos_id is not None}; {hint}"
        )
