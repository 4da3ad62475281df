"""Parameter counts equal the model's numel; FLOPs per token equal hand calculations."""

import pytest

from tests.unit.models.conftest import tiny_config
from tests.unit.models.test_transformer import VARIANTS
from zmaj_lm.config import ModelConfig
from zmaj_lm.models import Transformer
from zmaj_lm.utils.flops import count_parameters, flops_per_token, matmul_params


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_count_matches_numel(variant: str) -> None:
    cfg = tiny_config(**VARIANTS[variant])
    assert count_parameters(cfg) == sum(p.numel() for p in Transformer(cfg).parameters())


def test_llama_flops_by_hand() -> None:
    """d=64, 2 layers, 4 heads of 16, 2 KV heads, SwiGLU 96, vocab 97, T=128, untied."""
    cfg = tiny_config()
    attn = 64 * 64 + 2 * (64 * 32) + 64 * 64  # q, k, v, o
    mlp = 3 * 64 * 96
    norms = 2 * 64
    per_layer = attn + mlp + norms
    n = 2 * per_layer + 64 + 97 * 64  # blocks, final norm, LM head
    assert matmul_params(cfg) == n
    assert flops_per_token(cfg, 128) == 6 * n + 12 * 2 * 4 * 16 * 128


def test_window_and_moe_reduce_flops() -> None:
    cfg = tiny_config(sliding_window=[16, None])
    assert flops_per_token(cfg, 128) == 6 * matmul_params(cfg) + 12 * 4 * 16 * (16 + 128)
    moe = tiny_config(moe={"n_experts": 8, "top_k": 2, "d_expert": 32})
    active_moe = 64 * 8 + 2 * 3 * 64 * 32
    dense_mlp = 3 * 64 * 96
    assert matmul_params(moe) == matmul_params(tiny_config()) + 2 * (active_moe - dense_mlp)
    assert count_parameters(moe) - matmul_params(moe) == 97 * 64 + 2 * 6 * 3 * 64 * 32


def test_gpt2_small_has_124m_parameters() -> None:
    cfg = ModelConfig(
        vocab_size=50257,
        d_model=768,
        n_layers=12,
        n_heads=12,
        d_ff=3072,
        max_seq_len=1024,
        embedding_positions="learned",
        rope=None,
        qkv_bias=True,
        o_bias=True,
        norm="layernorm",
        norm_bias=True,
        activation="gelu_tanh",
        gated=False,
        mlp_bias=True,
        tie_embeddings=True,
    )
    assert count_parameters(cfg) == 124_439_808  # transformers' GPT2LMHeadModel, tied
