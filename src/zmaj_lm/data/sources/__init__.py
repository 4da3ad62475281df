"""Document sources: every corpus is a stream of strings, split into train/validation by hash.

``iter_texts(source, "train")`` yields the non-empty, decodable documents of one split.
:func:`iter_raw` yields every raw document, None for an undecodable one, so that preparation can
count what it skips; :func:`iter_labelled` pairs each with its source label (the ``stdlib``
package, the ``arithmetic`` operation, one label for ``synthetic``, ``source_field`` or the
dataset/file for ``hf``/``files``), by which the validation loss is broken down. The split
depends only on the document's text (a keyed hash compared with ``validation_fraction``):
deterministic across runs and machines, and duplicates never straddle train and validation.
"""

import hashlib
from collections.abc import Iterator
from typing import Literal

from zmaj_lm.config.data import SourceConfig
from zmaj_lm.data.sources import arithmetic, hf, stdlib, synthetic

Split = Literal["train", "validation"]
SPLITS: tuple[Split, Split] = ("train", "validation")

_SPLIT_KEY = b"zmaj-lm/split/v1"


def split_of(text: str, validation_fraction: float) -> Split:
    """``"validation"`` for a fraction ``validation_fraction`` of texts, chosen by hash."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=_SPLIT_KEY).digest()
    u = int.from_bytes(digest, "little") / 2.0**64
    return "validation" if u < validation_fraction else "train"


def iter_labelled(source: SourceConfig) -> Iterator[tuple[str | None, str]]:
    """``(text, source label)`` of every raw document of ``source`` in its stable order (text
    None: undecodable), before the split. Stops after ``source.max_documents`` raw documents when
    that is set."""
    it: Iterator[tuple[str | None, str]]
    if source.kind == "stdlib":
        it = stdlib.iter_labelled()
    elif source.kind == "synthetic":
        it = ((doc, synthetic.LABEL) for doc in synthetic.iter_documents(source))
    elif source.kind == "arithmetic":
        it = iter(arithmetic.iter_labelled(source))
    elif source.kind == "hf":
        it = hf.iter_hub(source)
    else:
        it = hf.iter_files(source)
    for i, item in enumerate(it):
        if source.max_documents is not None and i >= source.max_documents:
            return
        yield item


def iter_raw(source: SourceConfig) -> Iterator[str | None]:
    """Every raw document of ``source`` in its stable order (None: undecodable), before the split.

    Stops after ``source.max_documents`` raw documents when that is set.
    """
    for doc, _ in iter_labelled(source):
        yield doc


def is_empty(text: str) -> bool:
    """A document with no visible content is skipped (it would be a lone EOS)."""
    return not text.strip()


def iter_texts(source: SourceConfig, split: Split) -> Iterator[str]:
    """The non-empty, decodable documents of ``split`` (``"train"`` or ``"validation"``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    for doc in iter_raw(source):
        if doc is None or is_empty(doc):
            continue
        if split_of(doc, source.validation_fraction) == split:
            yield doc


def source_fingerprint(source: SourceConfig) -> str:
    """Changes whenever the documents could change: the config plus the corpus's own identity.

    ``streaming`` is left out: it changes how documents are read, not which. A set
    ``source_field`` is part of it (it changes the stored source labels); an unset one is left
    out, so directories prepared before the field existed keep their fingerprint.
    """
    exclude = {"streaming"} | ({"source_field"} if source.source_field is None else set())
    h = hashlib.sha256(source.model_dump_json(exclude=exclude).encode())
    if source.kind == "stdlib":
        h.update(stdlib.fingerprint().encode())
    elif source.kind == "files":
        h.update(hf.files_fingerprint(source).encode())
    return h.hexdigest()


__all__ = [
    "SPLITS",
    "Split",
    "arithmetic",
    "hf",
    "is_empty",
    "iter_labelled",
    "iter_raw",
    "iter_texts",
    "source_fingerprint",
    "split_of",
    "stdlib",
    "synthetic",
]
