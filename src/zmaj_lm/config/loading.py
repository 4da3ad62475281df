"""YAML loading with dotted overrides and one readable line per validation problem.

``load_config("configs/tiny.yaml", ["model.n_layers=4"])`` reads the file, applies each override
(values are parsed as YAML, so ``4`` is an int, ``null`` is None and ``[1, 2]`` a list), validates,
and returns a frozen config. Any problem becomes a :class:`ConfigError` whose lines each name the
file, the field path and the reason; scripts print them and exit with status 2.
"""

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from zmaj_lm.utils.io import atomic_write_text

C = TypeVar("C", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration could not be read or validated; ``str(err)`` is one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _format_validation_error(source: str, err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        loc = ".".join(str(part) for part in e["loc"] if not str(part).startswith("function-"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{source}: {loc or '<root>'}: {msg}")
    return lines


def apply_override(data: dict[str, Any], override: str, source: str = "<override>") -> None:
    """Set ``data[a][b][c] = value`` for an override ``a.b.c=value`` (value parsed as YAML)."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError([f"{source}: {override!r}: expected key.path=value"])
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: {key}: cannot parse value {raw!r}: {exc}"]) from exc
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
            node[part] = child
        elif not isinstance(child, dict):
            path = ".".join(parts[: i + 1])
            raise ConfigError([f"{source}: {path}: is not a section, cannot set {key}"])
        node = child
    node[parts[-1]] = value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning I/O and syntax problems into a :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "<root>"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}: {where}: invalid YAML: {problem}"]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: <root>: expected a mapping, got {type(data).__name__}"])
    return data


def validate_config(cls: type[C], data: dict[str, Any], source: str) -> C:
    """Validate ``data`` as ``cls``, raising :class:`ConfigError` with one line per problem."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from err


def load_config_as(
    cls: type[C], path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
) -> C:
    """Load ``path`` (or an empty mapping), apply ``overrides``, validate as ``cls``."""
    data = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<overrides>"
    for override in overrides:
        apply_override(data, override, source)
    return validate_config(cls, data, source)


def dump_config(config: BaseModel, path: str | Path) -> None:
    """Write the fully resolved config as YAML (atomically); loading it gives an equal config."""
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    atomic_write_text(path, text)
