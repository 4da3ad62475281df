"""ModelConfig validation: every invalid combination gets its own readable message."""

import re
from pathlib import Path

import pytest

from zmaj_lm.config import ConfigError, ModelConfig, load_config

BASE = {
    "vocab_size": 128,
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 4,
    "d_ff": 128,
    "max_seq_len": 64,
}
PRESETS = sorted(Path(__file__).parents[3].joinpath("configs", "models").glob("*.yaml"))


def make(**overrides: object) -> ModelConfig:
    return ModelConfig.model_validate({**BASE, **overrides})


def test_defaults_are_resolved_explicitly() -> None:
    cfg = make()
    assert cfg.n_kv_heads == 4
    assert cfg.head_dim == 16
    assert cfg.rotary_dim == 16


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"d_model": 66}, "d_model (66) must be divisible by n_heads (4)"),
        ({"n_kv_heads": 3}, "n_heads (4) must be a multiple of n_kv_heads (3)"),
        ({"rope": {"partial_rotary_factor": 0.1875}}, "= 3) must be even and positive"),
        ({"sliding_window": 0}, "sliding_window sizes must be positive"),
        ({"sliding_window": [8, -1]}, "sliding_window sizes must be positive"),
        ({"sliding_window": [8]}, "sliding_window has 1 entries but n_layers is 2"),
        ({"rope_layers": [True]}, "rope_layers has 1 entries but n_layers is 2"),
        ({"moe_layers": [True, False, True]}, "moe_layers has 3 entries but n_layers is 2"),
        (
            {"moe": {"n_experts": 2, "top_k": 3, "d_expert": 8}},
            "top_k (3) must be <= n_experts (2)",
        ),
        ({"norm_bias": True}, "norm_bias requires norm: layernorm"),
        ({"norm": "layernorm", "norm_unit_offset": True}, "only defined for norm: rmsnorm"),
        ({"norm": "layernorm", "qk_norm": "head"}, "qk_norm is implemented with RMSNorm"),
        ({"rope": None, "rope_layers": [True, False]}, "rope is None"),
        ({"attention_backend": "flex", "attn_dropout": 0.1}, "flex does not support"),
        ({"n_heads": 0}, "greater than 0"),
        ({"attention_backend": "cuda"}, "Input should be 'eager', 'sdpa' or 'flex'"),
        ({"n_layer": 3}, "Extra inputs are not permitted"),
        (
            {"rope": {"scaling": {"type": "llama3", "factor": 8, "low_freq_factor": 4}}},
            "high_freq_factor must be greater than low_freq_factor",
        ),
        ({"rope": {"scaling": {"type": "ntk", "factor": 2}}}, "does not match any of the expected"),
    ],
)
def test_invalid_configs_explain_themselves(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make(**overrides)


def test_per_layer_settings_are_per_layer() -> None:
    cfg = make(sliding_window=[None, 16], rope_layers=[True, False])
    assert [cfg.layer_window(i) for i in range(2)] == [None, 16]
    assert [cfg.layer_uses_rope(i) for i in range(2)] == [True, False]
    assert not make(rope=None).layer_uses_rope(0)
    moe = make(moe={"n_experts": 4, "top_k": 2, "d_expert": 8}, moe_layers=[False, True])
    assert [moe.layer_uses_moe(i) for i in range(2)] == [False, True]


def test_config_is_frozen() -> None:
    cfg = make()
    with pytest.raises(ValueError, match="frozen"):
        cfg.n_layers = 3  # type: ignore[misc]


def test_fields_carry_their_docstrings_as_help() -> None:
    assert "Key/value heads" in (ModelConfig.model_fields["n_kv_heads"].description or "")


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_presets_load(preset: Path) -> None:
    cfg = load_config(preset)
    assert cfg.model.n_layers > 0


def test_presets_exist() -> None:
    names = {p.stem for p in PRESETS}
    assert {"tiny", "gpt2-124m", "llama-125m", "llama-1b", "qwen3-0.6b"} <= names


def test_invalid_file_reports_file_field_and_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model:\n  vocab_size: 10\n  d_model: 64\n  n_layers: -1\n  n_heads: 4\n"
        "  d_ff: 8\n  max_seq_len: 16\n  n_layer: 2\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    lines = str(info.value).splitlines()
    assert f"{bad}: model.n_layers: Input should be greater than 0" in lines
    assert f"{bad}: model.n_layer: unknown field" in lines
    assert len(lines) == 2
