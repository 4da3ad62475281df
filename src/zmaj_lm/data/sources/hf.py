"""Hugging Face ``datasets`` sources: Hub datasets by name and local json/jsonl/parquet/text files.

Both read one text column (``text_field``) row by row. Streaming (the default) keeps memory flat
and writes no Arrow cache; ``streaming=False`` lets ``datasets`` download and cache the Hub
dataset once. A row whose field is not a string (None, a number) counts as undecodable.
"""

import glob
import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from zmaj_lm.config.data import SourceConfig
from zmaj_lm.data.errors import SourceError

_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def expand_paths(patterns: Iterable[str]) -> list[Path]:
    """Files named by ``patterns`` (globs allowed), sorted; an unmatched pattern is an error."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise SourceError(f"{pattern}: no such file")
        for match in matches:
            path = Path(match)
            if not path.is_file():
                raise SourceError(f"{path}: not a file")
            files.append(path)
    return files


def file_format(source: SourceConfig, files: list[Path]) -> str:
    """``source.file_format`` or the format implied by the first file's extension."""
    if source.file_format is not None:
        return source.file_format
    suffix = files[0].suffix.lower()
    if suffix not in _FORMATS:
        raise SourceError(
            f"{files[0]}: cannot infer the format from {suffix or 'no extension'!r}; "
            "set file_format (json, parquet or text)"
        )
    return _FORMATS[suffix]


def _iter_field(rows: Iterable[dict[str, Any]], field: str, where: str) -> Iterator[str | None]:
    it = iter(rows)
    while True:
        try:
            row = next(it)
        except StopIteration:
            return
        except Exception as exc:
            raise SourceError(f"{where}: cannot read: {_reason(exc)}") from exc
        if field not in row:
            columns = ", ".join(sorted(row)) or "none"
            raise SourceError(f"{where}: text_field {field!r} not found (columns: {columns})")
        value = row[field]
        yield value if isinstance(value, str) else None


def iter_hub(source: SourceConfig) -> Iterator[str | None]:
    """Rows of ``datasets.load_dataset(name, subset, split=split)``, their ``text_field``."""
    import datasets

    assert source.name is not None
    try:
        ds = datasets.load_dataset(
            source.name, source.subset, split=source.split, streaming=source.streaming
        )
    except Exception as exc:
        raise SourceError(f"{source.name}: cannot load dataset: {_reason(exc)}") from exc
    yield from _iter_field(ds, source.text_field, source.name)


def iter_files(source: SourceConfig) -> Iterator[str | None]:
    """Rows of local files through the ``json``, ``parquet`` or ``text`` builder of ``datasets``."""
    files = expand_paths(source.paths)
    fmt = file_format(source, files)
    import datasets

    kwargs: dict[str, Any] = {}
    field = source.text_field
    if fmt == "text":
        kwargs["sample_by"] = source.text_unit
        field = "text"
    where = str(files[0]) if len(files) == 1 else f"{files[0]} (+{len(files) - 1} files)"
    try:
        ds = datasets.load_dataset(
            fmt,
            data_files=[str(f) for f in files],
            split="train",
            streaming=source.streaming,
            **kwargs,
        )
    except Exception as exc:
        raise SourceError(f"{where}: cannot load as {fmt}: {_reason(exc)}") from exc
    yield from _iter_field(ds, field, where)


def files_fingerprint(source: SourceConfig) -> str:
    """Identifies local files by path, size and modification time."""
    h = hashlib.sha256()
    for path in expand_paths(source.paths):
        st = path.stat()
        h.update(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
