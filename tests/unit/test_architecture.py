"""Layering rules from CLAUDE.md, checked on the source: lower layers never import higher ones."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src" / "zmaj_lm"

# A package may import only the packages listed for it (plus itself and the standard library).
ALLOWED: dict[str, set[str]] = {
    "utils": {"config"},
    "config": {"utils"},
    "data": {"config", "utils"},
    "models": {"config", "utils"},
    "training": {"config", "utils", "data", "models", "eval"},
    "eval": {"config", "utils", "data", "models"},
    "interop": {"config", "utils", "data", "models"},
    "posttrain": {"config", "utils", "data", "models", "training", "eval", "interop"},
}


def zmaj_imports(path: Path) -> set[str]:
    """Top-level zmaj_lm subpackages imported by a file (module-level and lazy imports alike)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "zmaj_lm" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize(
    "package", sorted(p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists())
)
def test_package_imports_only_lower_layers(package: str) -> None:
    assert package in ALLOWED, f"new package {package}: add its layer to ALLOWED"
    violations = []
    for path in sorted((SRC / package).rglob("*.py")):
        bad = zmaj_imports(path) - ALLOWED[package] - {package}
        if bad:
            violations.append(f"{path.relative_to(SRC)} imports {sorted(bad)}")
    assert not violations, "\n".join(violations)


def test_import_does_not_load_transformers() -> None:
    code = (
        "import sys, importlib, pkgutil, zmaj_lm\n"
        "for m in pkgutil.walk_packages(zmaj_lm.__path__, 'zmaj_lm.'):\n"
        "    importlib.import_module(m.name)\n"
        "heavy = [n for n in ('transformers', 'peft', 'trl') if n in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
