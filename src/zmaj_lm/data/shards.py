"""Token shards on disk: layout, manifest, verification and memory-mapped reading.

A prepared directory looks like::

    out_dir/
      manifest.json                 Manifest: tokenizer fingerprint, dtype, counts, every shard
      tokenizer/tokenizer.json      the tokenizer the shards were made with
      train/shard_00000.bin         token ids, little-endian uint16 (uint32 if vocab > 65536)
      train/shard_00000.idx.npy     int64 document offsets (num_documents + 1,) into the .bin
      train/shard_00000.src.npy     uint8 source id of each document (num_documents,)
      validation/shard_00000.bin ...

Shards hold whole documents, each ending with EOS (and starting with BOS when ``add_bos``). The
manifest records each shard's size and sha256, so a reader can tell a missing, truncated or
corrupt file from a good one, and the tokenizer fingerprint, so data is never read with another
tokenizer's ids.

Source ids index ``Manifest.source_names`` (the labels of :mod:`zmaj_lm.data.sources`, numbered
in order of first appearance in the corpus, at most :data:`MAX_SOURCES`). A directory prepared
before source ids existed has no ``.src.npy`` files and ``source_names`` None: the prepare step
adds them in place (the token shards are kept), and until then a reader loads it as one source,
:data:`LEGACY_SOURCE`, with a warning.
"""

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from loguru import logger
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, ValidationError

from zmaj_lm.data.errors import ShardError
from zmaj_lm.utils.io import atomic_write_json

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
TokenDtype = Literal["uint16", "uint32"]
SOURCE_DTYPE = np.dtype(np.uint8)
"""Dtype of the per-document source ids (``<name>.src.npy``)."""
MAX_SOURCES = 64
"""Source names per directory: the first ``MAX_SOURCES - 1`` distinct labels in corpus order
keep their own id, later ones share :data:`OTHER_SOURCE` (a guard against a ``source_field``
with thousands of values, such as URLs; a breakdown into more groups would not be read)."""
OTHER_SOURCE = "other"
"""Name shared by the labels beyond the first ``MAX_SOURCES - 1``."""
LEGACY_SOURCE = "all"
"""The one source name of a directory prepared before source ids existed."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShardInfo(_Record):
    """One shard: its files, counts, checksums and the raw-document range it covers."""

    name: str
    """File stem: ``<name>.bin`` and ``<name>.idx.npy`` in the split directory."""
    num_tokens: int
    """Tokens in the shard (BOS/EOS included)."""
    num_documents: int
    """Documents in the shard."""
    num_bytes: int
    """UTF-8 bytes of the documents' text (for bits per byte)."""
    size_bytes: int
    """Size of ``<name>.bin``: ``num_tokens * itemsize``."""
    sha256: str
    """Checksum of ``<name>.bin``."""
    index_sha256: str
    """Checksum of ``<name>.idx.npy``."""
    source_sha256: str | None = None
    """Checksum of ``<name>.src.npy``; None in a directory prepared before source ids."""
    raw_start: int
    """First raw-stream index this shard's range covers (previous shard's ``raw_end``)."""
    raw_end: int
    """One past the raw-stream index of its last document."""


class SplitInfo(_Record):
    """Totals and shards of one split."""

    num_tokens: int = 0
    """Tokens over all shards."""
    num_documents: int = 0
    """Documents over all shards."""
    num_bytes: int = 0
    """UTF-8 bytes of all documents' text; bpb = nats/token * num_tokens / (num_bytes * ln 2)."""
    shards: list[ShardInfo] = []
    """Shards in order."""


class Manifest(_Record):
    """What ``prepare_shards`` wrote and with which tokenizer; rewritten after every shard."""

    format_version: int = FORMAT_VERSION
    """Layout version of this directory."""
    complete: bool = False
    """True once every document of the source is in a shard."""
    tokenizer_fingerprint: str
    """sha256 of the tokenizer's ``tokenizer.json`` text."""
    vocab_size: int
    """Tokenizer vocabulary size."""
    dtype: TokenDtype
    """Token dtype of every ``.bin``."""
    eos_id: int
    """EOS id appended to every document."""
    bos_id: int | None
    """BOS id prepended to every document, or None when ``add_bos`` is off."""
    source: dict[str, Any]
    """The source config the shards were made from."""
    source_fingerprint: str
    """Identity of the source's documents (config + corpus files)."""
    shard_tokens: int
    """Target tokens per shard."""
    raw_documents: int = 0
    """Raw documents read from the source (set when complete)."""
    skipped_empty: int = 0
    """Empty or whitespace-only documents skipped (set when complete)."""
    skipped_undecodable: int = 0
    """Documents that were not valid text, skipped (set when complete)."""
    splits: dict[str, SplitInfo] = {}
    """``train`` and ``validation``."""
    source_names: list[str] | None = None
    """Name of each source id (index = id); None: prepared before source ids existed."""

    def split(self, name: str) -> SplitInfo:
        """The split ``name``, or an empty one."""
        return self.splits.get(name, SplitInfo())


def source_names_of(manifest: Manifest) -> list[str]:
    """The manifest's source names, ``[LEGACY_SOURCE]`` for a directory without source ids."""
    return list(manifest.source_names) if manifest.source_names is not None else [LEGACY_SOURCE]


def token_dtype(vocab_size: int) -> TokenDtype:
    """uint16 when every id fits (vocab <= 65,536), else uint32."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def manifest_path(out_dir: str | os.PathLike[str]) -> Path:
    """``out_dir/manifest.json``."""
    return Path(out_dir) / MANIFEST_FILE


def read_manifest(out_dir: str | os.PathLike[str]) -> Manifest | None:
    """The manifest of ``out_dir``, None if there is none; a damaged one is a ShardError."""
    path = manifest_path(out_dir)
    if not path.is_file():
        return None
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError) as exc:
        raise ShardError(f"{path}: unreadable manifest: {str(exc).splitlines()[0]}") from exc


def write_manifest(out_dir: str | os.PathLike[str], manifest: Manifest) -> None:
    """Replace ``out_dir/manifest.json`` atomically."""
    atomic_write_json(manifest_path(out_dir), manifest.model_dump(mode="json"))


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Checksum of a file, read in 4 MiB chunks (flat memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def shard_problem(split_dir: Path, info: ShardInfo, *, checksums: bool = True) -> str | None:
    """Why the shard on disk does not match ``info`` (missing, truncated, corrupt), or None."""
    bin_path = split_dir / f"{info.name}.bin"
    idx_path = split_dir / f"{info.name}.idx.npy"
    src_path = split_dir / f"{info.name}.src.npy"
    paths = [bin_path, idx_path] + ([src_path] if info.source_sha256 is not None else [])
    for path in paths:
        if not path.is_file():
            return f"{path}: missing"
    size = bin_path.stat().st_size
    if size != info.size_bytes:
        what = "truncated" if size < info.size_bytes else "too long"
        return f"{bin_path}: {what}: {size} bytes, manifest says {info.size_bytes}"
    if checksums:
        if sha256_file(bin_path) != info.sha256:
            return f"{bin_path}: corrupt: checksum differs from the manifest"
        if sha256_file(idx_path) != info.index_sha256:
            return f"{idx_path}: corrupt: checksum differs from the manifest"
        if info.source_sha256 is not None and sha256_file(src_path) != info.source_sha256:
            return f"{src_path}: corrupt: checksum differs from the manifest"
    return None


def resolve_split_dir(path: str | os.PathLike[str], split: str) -> tuple[Path, str]:
    """Accept a prepared directory (with ``manifest.json``) or one of its split directories.

    Returns ``(out_dir, split)``.
    """
    path = Path(path)
    if path.is_dir() and not manifest_path(path).is_file() and manifest_path(path.parent).is_file():
        return path.parent, path.name
    return path, split


_VERIFIED: set[tuple[str, int, int, str]] = set()
"""Shards whose checksums this process has verified, keyed by path, size, mtime and sha256, so
a validation loader rebuilt at every evaluation does not re-read its shards."""


def _verified_key(split_dir: Path, info: ShardInfo) -> tuple[str, int, int, str] | None:
    try:
        st = (split_dir / f"{info.name}.bin").stat()
    except OSError:
        return None
    return (str((split_dir / info.name).resolve()), st.st_size, st.st_mtime_ns, info.sha256)


_WARNED_LEGACY: set[str] = set()
"""Directories without source ids already warned about (a validation loader is rebuilt at every
evaluation)."""


class ShardSet:
    """Every document of one split, memory-mapped; documents are numbered across shards.

    ``lengths`` (N,) int64 holds each document's token count and ``source_ids`` (N,) uint8 its
    source (an index into ``source_names``); :meth:`tokens` returns a slice of one document
    without copying the shard into memory.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        split: str = "train",
        *,
        tokenizer_fingerprint: str | None = None,
        verify_checksums: bool = True,
    ) -> None:
        out_dir, split = resolve_split_dir(out_dir, split)
        manifest = read_manifest(out_dir)
        if manifest is None:
            raise ShardError(f"{manifest_path(out_dir)}: missing: run scripts/prepare_data.py")
        if manifest.format_version != FORMAT_VERSION:
            raise ShardError(
                f"{manifest_path(out_dir)}: format_version {manifest.format_version}, "
                f"this code reads {FORMAT_VERSION}"
            )
        if (
            tokenizer_fingerprint is not None
            and tokenizer_fingerprint != manifest.tokenizer_fingerprint
        ):
            raise ShardError(
                f"{manifest_path(out_dir)}: shards were prepared with tokenizer "
                f"{manifest.tokenizer_fingerprint[:12]}, not with this tokenizer "
                f"{tokenizer_fingerprint[:12]}; prepare the data again with it"
            )
        if not manifest.complete:
            raise ShardError(
                f"{manifest_path(out_dir)}: preparation did not finish; run prepare_data.py again"
            )
        if split not in manifest.splits:
            raise ShardError(f"{manifest_path(out_dir)}: no split {split!r}")
        info = manifest.splits[split]
        if info.num_documents == 0:
            raise ShardError(f"{manifest_path(out_dir)}: split {split!r} has no documents")
        self.out_dir = out_dir
        self.split = split
        self.manifest = manifest
        self.info = info
        split_dir = out_dir / split
        dtype = np.dtype(manifest.dtype).newbyteorder("<")
        self._tokens: list[NDArray[Any]] = []
        offsets: list[NDArray[np.int64]] = []
        sources: list[NDArray[np.uint8]] = []
        for shard in info.shards:
            key = _verified_key(split_dir, shard)
            checksums = verify_checksums and key not in _VERIFIED
            problem = shard_problem(split_dir, shard, checksums=checksums)
            if problem is not None:
                raise ShardError(f"{problem}; run prepare_data.py again to rebuild it")
            if checksums and key is not None:
                _VERIFIED.add(key)
            self._tokens.append(np.memmap(split_dir / f"{shard.name}.bin", dtype=dtype, mode="r"))
            idx = np.load(split_dir / f"{shard.name}.idx.npy")
            if idx.shape != (shard.num_documents + 1,) or int(idx[-1]) != shard.num_tokens:
                raise ShardError(f"{split_dir / shard.name}.idx.npy: does not match the manifest")
            offsets.append(idx.astype(np.int64))
            if manifest.source_names is not None:
                sources.append(self._load_sources(split_dir, shard, len(manifest.source_names)))
        self._starts = np.concatenate([o[:-1] for o in offsets])
        self.lengths: NDArray[np.int64] = np.concatenate([np.diff(o) for o in offsets])
        counts = np.array([len(o) - 1 for o in offsets], dtype=np.int64)
        self._shard_of = np.repeat(np.arange(len(offsets), dtype=np.int64), counts)
        self.source_names: list[str] = source_names_of(manifest)
        self.source_ids: NDArray[np.uint8]
        if manifest.source_names is None:
            self.source_ids = np.zeros(len(self.lengths), dtype=SOURCE_DTYPE)
            where = str(manifest_path(out_dir))
            if where not in _WARNED_LEGACY:
                _WARNED_LEGACY.add(where)
                logger.warning(
                    "{}: prepared before per-document source ids; read as one source {!r} (run "
                    "prepare_data.py on it again to add them in place)",
                    where,
                    LEGACY_SOURCE,
                )
        else:
            self.source_ids = np.concatenate(sources)

    @staticmethod
    def _load_sources(split_dir: Path, shard: ShardInfo, num_names: int) -> NDArray[np.uint8]:
        path = split_dir / f"{shard.name}.src.npy"
        if shard.source_sha256 is None:
            raise ShardError(f"{path}: the manifest lists source names but no checksum for it")
        ids = np.load(path)
        if (
            ids.shape != (shard.num_documents,)
            or ids.dtype != SOURCE_DTYPE
            or (ids.size and int(ids.max()) >= num_names)
        ):
            raise ShardError(f"{path}: does not match the manifest")
        return np.asarray(ids, dtype=np.uint8)

    @property
    def num_documents(self) -> int:
        """Documents in the split."""
        return len(self.lengths)

    @property
    def num_tokens(self) -> int:
        """Tokens in the split."""
        return self.info.num_tokens

    @property
    def num_bytes(self) -> int:
        """UTF-8 bytes of the split's text."""
        return self.info.num_bytes

    def tokens(self, doc: int, start: int = 0, stop: int | None = None) -> NDArray[Any]:
        """Tokens ``start:stop`` of document ``doc`` (a memory-mapped view, shard dtype)."""
        base = int(self._starts[doc])
        length = int(self.lengths[doc])
        stop = length if stop is None else min(stop, length)
        return self._tokens[int(self._shard_of[doc])][base + start : base + stop]


def split_stats(out_dir: str | os.PathLike[str], split: str = "validation") -> SplitInfo:
    """Token, document and UTF-8 byte counts of a prepared split (for bits per byte).

    ``bpb = mean_nats_per_predicted_token * predicted_tokens / (num_bytes * ln 2)``.
    """
    out_dir, split = resolve_split_dir(out_dir, split)
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise ShardError(f"{manifest_path(out_dir)}: missing: run scripts/prepare_data.py")
    return manifest.split(split)
