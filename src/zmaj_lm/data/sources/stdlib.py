"""The ``stdlib`` corpus: the running interpreter's standard library source, one file per document.

About 12 MB of real, varied Python (code, docstrings, comments) that every machine has, so
pretraining runs and tests need no download. Test suites (``test/``, ``tests/``,
``idlelib/idle_test``, ``lib2to3/tests``) and installed packages (``site-packages``) are skipped:
they are repetitive, and some test data files are deliberately undecodable.

Each file is labelled by the top-level package it belongs to (``asyncio``, ``email``), so the
validation loss can be broken down by source. Single-file top-level modules (``os.py``,
``typing.py``) share the label ``modules``. To keep the breakdown readable, only the
:data:`TOP_PACKAGES` largest packages by bytes keep their own label and the rest share ``other``:
at most 17 labels (about 40% of the bytes are ``modules``; CPython 3.11's 15th largest package,
``urllib``, has 160 KB, and everything below it together about 800 KB).
"""

import hashlib
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

EXCLUDED_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
)
TOP_PACKAGES = 15
"""Packages (by total bytes) that keep their own source label; smaller ones are ``other``."""
MODULES_LABEL = "modules"
OTHER_LABEL = "other"


def stdlib_root() -> Path:
    """Directory of the running interpreter's pure-Python standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    """Every ``*.py`` under ``root`` outside :data:`EXCLUDED_DIRS`, in a stable (sorted) order."""
    root = stdlib_root() if root is None else root
    files = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if EXCLUDED_DIRS.isdisjoint(rel.parts[:-1]) and path.is_file():
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _top_level(rel: Path) -> str:
    return MODULES_LABEL if len(rel.parts) == 1 else rel.parts[0]


def file_labels(root: Path | None = None) -> dict[Path, str]:
    """The source label of every file of :func:`stdlib_files` (see the module docstring)."""
    root = stdlib_root() if root is None else root
    files = stdlib_files(root)
    sizes: dict[str, int] = {}
    for path in files:
        top = _top_level(path.relative_to(root))
        if top != MODULES_LABEL:
            sizes[top] = sizes.get(top, 0) + path.stat().st_size
    kept = set(sorted(sizes, key=lambda k: (-sizes[k], k))[:TOP_PACKAGES])
    labels: dict[Path, str] = {}
    for path in files:
        top = _top_level(path.relative_to(root))
        labels[path] = top if top == MODULES_LABEL or top in kept else OTHER_LABEL
    return labels


def iter_labelled(root: Path | None = None) -> Iterator[tuple[str | None, str]]:
    """``(text, label)`` per file; text is None for a file that is not valid UTF-8."""
    for path, label in file_labels(root).items():
        try:
            yield path.read_bytes().decode("utf-8"), label
        except UnicodeDecodeError:
            yield None, label


def iter_documents(root: Path | None = None) -> Iterator[str | None]:
    """File contents as text; None for a file that is not valid UTF-8 (counted, then skipped)."""
    for text, _ in iter_labelled(root):
        yield text


def fingerprint(root: Path | None = None) -> str:
    """Identifies this interpreter's corpus: version, and every file's path and size."""
    root = stdlib_root() if root is None else root
    h = hashlib.sha256(sys.version.encode())
    for path in stdlib_files(root):
        h.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\n".encode())
    return h.hexdigest()
