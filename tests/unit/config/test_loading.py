"""YAML loading, dotted overrides and dump/load round trips."""

from pathlib import Path

import pytest

from zmaj_lm.config import Config, ConfigError, dump_config, load_config
from zmaj_lm.config.loading import apply_override

TINY = Path(__file__).parents[3] / "configs" / "models" / "tiny.yaml"


def test_overrides_are_parsed_as_yaml() -> None:
    cfg = load_config(TINY, ["model.n_layers=2", "model.sliding_window=[null, 32]"])
    assert cfg.model.n_layers == 2
    assert cfg.model.sliding_window == [None, 32]


def test_override_creates_nested_sections() -> None:
    data: dict[str, object] = {}
    apply_override(data, "model.rope.scaling.factor=2.5")
    assert data == {"model": {"rope": {"scaling": {"factor": 2.5}}}}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.n_layers", "expected key.path=value"),
        ("model.n_layers.deep=3", "model.n_layers: is not a section"),
        ("model.n_heads=5", "d_model (256) must be divisible by n_heads (5)"),
        ("model.bogus=1", "model.bogus: unknown field"),
    ],
)
def test_bad_overrides_name_the_field(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TINY, [override])
    assert message in str(info.value)
    assert all(line.startswith(str(TINY)) for line in str(info.value).splitlines())


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: line \d+: invalid YAML"):
        load_config(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(scalar)


@pytest.mark.parametrize("preset", sorted(TINY.parent.glob("*.yaml")), ids=lambda p: p.stem)
def test_dump_then_load_round_trips(preset: Path, tmp_path: Path) -> None:
    cfg = load_config(preset, ["model.sliding_window=64"])
    out = tmp_path / "resolved.yaml"
    dump_config(cfg, out)
    again = load_config(out)
    assert again == cfg
    assert isinstance(again, Config)
    dump_config(again, tmp_path / "twice.yaml")
    assert (tmp_path / "twice.yaml").read_text() == out.read_text()
