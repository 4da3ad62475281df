"""Rotary embeddings: the rotation's properties, and frequencies equal to transformers'."""

from typing import Any

import pytest
import torch

from tests.unit.models.conftest import tiny_config
from zmaj_lm.config import RopeConfig
from zmaj_lm.models.rope import RotaryEmbedding, apply_rotary, rope_frequencies, sinusoidal_table


def rotate(x: torch.Tensor, positions: torch.Tensor, **rope: Any) -> torch.Tensor:
    cfg = tiny_config(rope=rope, head_dim=x.shape[-1])
    cos, sin = RotaryEmbedding(cfg)(positions, x.dtype)
    return apply_rotary(x, cos, sin)


def test_rotation_preserves_norm_and_depends_on_relative_position() -> None:
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 32, generator=g), torch.randn(1, 1, 1, 32, generator=g)

    def score(i: int, j: int) -> float:
        qi = rotate(q, torch.tensor([[i]]))
        kj = rotate(k, torch.tensor([[j]]))
        return float((qi * kj).sum())

    torch.testing.assert_close(rotate(q, torch.tensor([[37]])).norm(), q.norm())
    assert score(10, 3) == pytest.approx(score(57, 50), abs=1e-4)
    assert score(10, 3) != pytest.approx(score(10, 4), abs=1e-4)


def test_partial_rotary_leaves_the_tail_unchanged() -> None:
    x = torch.randn(2, 3, 5, 32)
    out = rotate(x, torch.arange(5).expand(2, 5), partial_rotary_factor=0.25)
    torch.testing.assert_close(out[..., 8:], x[..., 8:], atol=0, rtol=0)
    assert not torch.allclose(out[..., :8], x[..., :8])


def test_position_zero_is_identity() -> None:
    x = torch.randn(1, 2, 1, 16)
    torch.testing.assert_close(rotate(x, torch.zeros(1, 1, dtype=torch.long)), x)


HF_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("default", {"theta": 10000.0}, {"rope_type": "default", "rope_theta": 10000.0}),
    (
        "linear",
        {"theta": 10000.0, "scaling": {"type": "linear", "factor": 4.0}},
        {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    ),
    (
        "llama3",
        {
            "theta": 500000.0,
            "scaling": {
                "type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
        },
        {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    ),
    (
        "yarn",
        {
            "theta": 1000000.0,
            "scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
        },
        {
            "rope_type": "yarn",
            "rope_theta": 1000000.0,
            "factor": 4.0,
            "original_max_position_embeddings": 32768,
        },
    ),
    (
        "yarn_partial_betas",
        {
            "theta": 10000.0,
            "partial_rotary_factor": 0.5,
            "scaling": {
                "type": "yarn",
                "factor": 16.0,
                "original_max_position_embeddings": 4096,
                "beta_fast": 16.0,
                "beta_slow": 2.0,
            },
        },
        {
            "rope_type": "yarn",
            "rope_theta": 10000.0,
            "factor": 16.0,
            "partial_rotary_factor": 0.5,
            "original_max_position_embeddings": 4096,
            "beta_fast": 16.0,
            "beta_slow": 2.0,
        },
    ),
]


@pytest.mark.parametrize(("name", "ours", "hf"), HF_CASES, ids=[c[0] for c in HF_CASES])
def test_frequencies_match_transformers(
    name: str, ours: dict[str, Any], hf: dict[str, Any]
) -> None:
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    head_dim = 128
    hf_config = LlamaConfig(
        hidden_size=1024,
        num_attention_heads=8,
        head_dim=head_dim,
        max_position_embeddings=131072,
        rope_parameters=hf,
    )
    rope = RopeConfig.model_validate(ours)
    inv_freq, scale = rope_frequencies(rope, int(head_dim * rope.partial_rotary_factor))
    if hf["rope_type"] == "default":
        expected = 1.0 / (hf["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim))
        expected_scale = 1.0
    else:
        expected, expected_scale = ROPE_INIT_FUNCTIONS[hf["rope_type"]](hf_config, "cpu")
    torch.testing.assert_close(inv_freq, expected.float(), atol=0, rtol=1e-6)
    assert scale == pytest.approx(expected_scale)


def test_sinusoidal_table_matches_definition() -> None:
    table = sinusoidal_table(50, 16)
    pos, i = 13, 3
    angle = torch.tensor(pos / 10000 ** (2 * i / 16))
    torch.testing.assert_close(table[pos, 2 * i], angle.sin())
    torch.testing.assert_close(table[pos, 2 * i + 1], angle.cos())
