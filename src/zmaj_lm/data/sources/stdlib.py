"""The ``stdlib`` corpus: the running interpreter's standard library source, one file per document.

About 12 MB of real, varied Python (code, docstrings, comments) that every machine has, so
pretraining runs and tests need no download. Test suites (``test/``, ``tests/``,
``idlelib/idle_test``, ``lib2to3/tests``) and installed packages (``site-packages``) are skipped:
they are repetitive, and some test data files are deliberately undecodable.
"""

import hashlib
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

EXCLUDED_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
)


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


def iter_documents(root: Path | None = None) -> Iterator[str | None]:
    """File contents as text; None for a file that is not valid UTF-8 (counted, then skipped)."""
    for path in stdlib_files(root):
        try:
            yield path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            yield None


def fingerprint(root: Path | None = None) -> str:
    """Identifies this interpreter's corpus: version, and every file's path and size."""
    root = stdlib_root() if root is None else root
    h = hashlib.sha256(sys.version.encode())
    for path in stdlib_files(root):
        h.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\n".encode())
    return h.hexdigest()
