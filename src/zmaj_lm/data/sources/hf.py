"""Hugging Face ``datasets`` sources: Hub datasets by name and local json/jsonl/parquet/text files.

Both read one text column (``text_field``) row by row. Streaming (the default) keeps memory flat
and writes no Arrow cache; ``streaming=False`` lets ``datasets`` download and cache the Hub
dataset once. A row whose field is not a string (None, a number) counts as undecodable.

Every row also gets a source label: the value of ``source_field`` when that is set (a dotted
path reaches into nested columns; a missing value is ``unknown``), else the dataset name for a
Hub dataset, or for local files the file's path relative to the deepest directory holding all of
them (its bare name when they share one), so that same-named files in different directories stay
apart. Labelling by file reads the files one at a time, in the same order as one multi-file load.
"""

import glob
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from zmaj_lm.config.data import SourceConfig
from zmaj_lm.data.errors import SourceError

_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}
UNKNOWN_LABEL = "unknown"
"""Source label of a row whose ``source_field`` is null or empty."""


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


def file_labels(files: list[Path]) -> list[str]:
    """Each file's path relative to the deepest directory that holds all of ``files``."""
    resolved = [f.resolve() for f in files]
    common = Path(os.path.commonpath([f.parent for f in resolved]))
    return [f.relative_to(common).as_posix() for f in resolved]


def _lookup(row: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """``row[path]``, or the nested ``row[a][b]`` for ``path="a.b"``; ``(found, value)``."""
    if path in row:
        return True, row[path]
    node: Any = row
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _label(value: Any, field: str, where: str) -> str:
    if value is None:
        return UNKNOWN_LABEL
    if isinstance(value, (str, int)):
        text = str(value).strip()
        return text or UNKNOWN_LABEL
    raise SourceError(
        f"{where}: source_field {field!r} holds a {type(value).__name__}, not a string label"
    )


def _iter_field(
    rows: Iterable[dict[str, Any]],
    field: str,
    where: str,
    *,
    label: str,
    source_field: str | None,
) -> Iterator[tuple[str | None, str]]:
    """``(text, source label)`` per row; the label is ``label`` unless ``source_field`` is set."""
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
        if source_field is not None:
            found, raw = _lookup(row, source_field)
            if not found:
                columns = ", ".join(sorted(row)) or "none"
                raise SourceError(
                    f"{where}: source_field {source_field!r} not found (columns: {columns})"
                )
            label = _label(raw, source_field, where)
        yield (value if isinstance(value, str) else None), label


def iter_hub(source: SourceConfig) -> Iterator[tuple[str | None, str]]:
    """Rows of ``datasets.load_dataset(name, subset, split=split)``: ``(text_field, label)``."""
    import datasets

    assert source.name is not None
    try:
        ds = datasets.load_dataset(
            source.name, source.subset, split=source.split, streaming=source.streaming
        )
    except Exception as exc:
        raise SourceError(f"{source.name}: cannot load dataset: {_reason(exc)}") from exc
    yield from _iter_field(
        ds, source.text_field, source.name, label=source.name, source_field=source.source_field
    )


def _load_files(source: SourceConfig, files: list[Path], fmt: str, where: str) -> Any:
    import datasets

    kwargs: dict[str, Any] = {"sample_by": source.text_unit} if fmt == "text" else {}
    try:
        return datasets.load_dataset(
            fmt,
            data_files=[str(f) for f in files],
            split="train",
            streaming=source.streaming,
            **kwargs,
        )
    except Exception as exc:
        raise SourceError(f"{where}: cannot load as {fmt}: {_reason(exc)}") from exc


def iter_files(source: SourceConfig) -> Iterator[tuple[str | None, str]]:
    """Rows of local files through the ``json``, ``parquet`` or ``text`` builder of ``datasets``:
    ``(text, label)``, labelled by ``source_field`` or else by file (read one at a time)."""
    files = expand_paths(source.paths)
    fmt = file_format(source, files)
    field = "text" if fmt == "text" else source.text_field
    if source.source_field is None:
        for path, label in zip(files, file_labels(files), strict=True):
            ds = _load_files(source, [path], fmt, str(path))
            yield from _iter_field(ds, field, str(path), label=label, source_field=None)
        return
    where = str(files[0]) if len(files) == 1 else f"{files[0]} (+{len(files) - 1} files)"
    if fmt == "text":
        raise SourceError(f"{where}: source_field needs json or parquet files, not text")
    ds = _load_files(source, files, fmt, where)
    yield from _iter_field(ds, field, where, label="", source_field=source.source_field)


def files_fingerprint(source: SourceConfig) -> str:
    """Identifies local files by path, size and modification time."""
    h = hashlib.sha256()
    for path in expand_paths(source.paths):
        st = path.stat()
        h.update(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
