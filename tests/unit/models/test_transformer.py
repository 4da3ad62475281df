"""The transformer: packed rows equal separate documents, every variant runs, backends agree."""

from typing import Any

import pytest
import torch

from tests.unit.models.conftest import tiny_config
from zmaj_lm.config import ModelConfig
from zmaj_lm.models import Transformer

VARIANTS: dict[str, dict[str, Any]] = {
    "llama": {},
    "gpt2": {
        "embedding_positions": "learned",
        "rope": None,
        "qkv_bias": True,
        "o_bias": True,
        "norm": "layernorm",
        "norm_bias": True,
        "activation": "gelu_tanh",
        "gated": False,
        "mlp_bias": True,
        "tie_embeddings": True,
    },
    "sinusoidal_relu2_post_residual": {
        "embedding_positions": "sinusoidal",
        "rope": None,
        "activation": "relu2",
        "gated": False,
        "norm": "layernorm",
        "norm_placement": "post_residual",
    },
    "gemma": {
        "norm_unit_offset": True,
        "scale_embeddings": True,
        "activation": "gelu_tanh",
        "head_dim": 24,
        "tie_embeddings": True,
    },
    "gemma2_like": {
        "norm_unit_offset": True,
        "norm_placement": "sandwich",
        "attn_logit_softcap": 20.0,
        "final_logit_softcap": 10.0,
        "sliding_window": [8, None],
        "attn_scale": 0.2,
    },
    "olmo2": {"norm_placement": "post", "qk_norm": "full"},
    "qwen3": {"qk_norm": "head", "head_dim": 32},
    "qwen2": {"qkv_bias": True, "sliding_window": 16},
    "mistral_window": {"sliding_window": 8},
    "partial_rotary_nope_layers": {
        "rope": {"partial_rotary_factor": 0.5},
        "rope_layers": [True, False],
    },
    "llama3_scaling": {
        "rope": {
            "theta": 500000.0,
            "scaling": {"type": "llama3", "factor": 8.0, "original_max_position_embeddings": 32},
        },
    },
    "yarn": {
        "rope": {"scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}}
    },
    "linear_rope": {"rope": {"scaling": {"type": "linear", "factor": 2.0}}},
    "mqa_geglu": {"n_kv_heads": 1, "activation": "gelu"},
    "moe_shared": {
        "moe": {
            "n_experts": 4,
            "top_k": 2,
            "d_expert": 32,
            "shared_expert_d_ff": 48,
            "z_loss_coef": 0.001,
        },
        "moe_layers": [False, True],
    },
}


def build(cfg: ModelConfig, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(cfg).eval()


def packed_row(lengths: list[int], vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (1, sum(lengths)), generator=g)
    doc = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])[None]
    return ids, doc


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_forward_backward(variant: str) -> None:
    cfg = tiny_config(**VARIANTS[variant])
    model = build(cfg).train()
    ids, doc = packed_row([10, 7, 15], cfg.vocab_size)
    out = model(ids, document_ids=doc)
    assert out.logits.shape == (1, 32, cfg.vocab_size)
    loss = out.logits.logsumexp(-1).mean() + out.aux_loss
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert (out.aux_loss > 0) == (cfg.moe is not None)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_packed_row_equals_separate_documents(variant: str, backend: str) -> None:
    """Logits (atol 1e-5) and gradients (atol 1e-5) of a packed row equal those of each
    document run alone: no attention, position or MoE statistic leaks across documents."""
    cfg = tiny_config(**VARIANTS[variant], attention_backend=backend)
    if cfg.moe is not None:
        cfg = cfg.model_copy(
            update={"moe": cfg.moe.model_copy(update={"aux_loss_coef": 0.0, "z_loss_coef": 0.0})}
        )
    lengths = [11, 5, 16]
    ids, doc = packed_row(lengths, cfg.vocab_size)
    packed_model = build(cfg)
    packed = packed_model(ids, document_ids=doc).logits
    packed.square().sum().backward()

    alone_model = build(cfg)
    pieces = []
    for chunk in ids.split(lengths, dim=1):
        pieces.append(alone_model(chunk).logits)
    alone = torch.cat(pieces, dim=1)
    alone.square().sum().backward()

    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=0)
    for (name, p), q in zip(packed_model.named_parameters(), alone_model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("variant", ["llama", "gpt2", "gemma2_like", "qwen3"])
def test_eager_and_sdpa_models_agree_with_padding(variant: str) -> None:
    base = tiny_config(**VARIANTS[variant])
    ids, doc = packed_row([9, 12], base.vocab_size)
    doc = torch.cat([torch.full((1, 4), -1), doc], dim=1)
    ids = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], dim=1)
    outs = []
    for backend in ("eager", "sdpa"):
        model = build(base.model_copy(update={"attention_backend": backend}))
        outs.append(model(ids, document_ids=doc).logits[:, 4:])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["llama", "gpt2", "gemma2_like"])
def test_flex_model_forward_matches_eager(variant: str) -> None:
    cfg = tiny_config(**VARIANTS[variant])
    ids, doc = packed_row([20, 30, 14], cfg.vocab_size)
    outs = []
    for backend in ("eager", "flex"):  # forward only: flex has no CPU backward
        with torch.no_grad():
            outs.append(
                build(cfg.model_copy(update={"attention_backend": backend}))(
                    ids, document_ids=doc
                ).logits
            )
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)


def test_activation_checkpointing_gives_identical_gradients() -> None:
    grads = []
    for ckpt in (False, True):
        model = build(tiny_config(activation_checkpointing=ckpt, dropout=0.0)).train()
        ids, doc = packed_row([12, 20], model.config.vocab_size)
        model(ids, document_ids=doc).logits.square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_tied_embeddings_share_one_tensor() -> None:
    model = build(tiny_config(tie_embeddings=True))
    assert model.lm_head.weight is model.embed_tokens.weight
    assert "lm_head.weight" not in {n for n, _ in model.named_parameters()}


def test_initialisation_statistics() -> None:
    cfg = tiny_config(d_model=256, n_heads=4, d_ff=512, n_layers=8, vocab_size=512)
    model = build(cfg)
    std = model.layers[0].self_attn.q_proj.weight.std().item()
    out_std = model.layers[0].self_attn.o_proj.weight.std().item()
    assert abs(std - 0.02) < 0.002
    assert abs(out_std - 0.02 / 4.0) < 0.0005  # 1 / sqrt(2 * 8 layers)
    assert torch.all(model.layers[0].attn_norm.weight == 1)
    gemma = build(tiny_config(norm_unit_offset=True))
    assert torch.all(gemma.norm.weight == 0)


def test_dropout_only_in_training() -> None:
    model = build(tiny_config(dropout=0.5, attn_dropout=0.5))
    ids = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, model(ids).logits)
        model.train()
        assert not torch.allclose(model(ids).logits, model(ids).logits)


def test_learned_positions_reject_too_long_input() -> None:
    model = build(tiny_config(embedding_positions="learned", rope=None, max_seq_len=16))
    with pytest.raises(IndexError):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "gpt2-124m", "llama-125m", "llama-1b", "qwen3-0.6b"])
def test_presets_compile_without_graph_breaks(preset: str) -> None:
    """fullgraph=True fails on any graph break; presets are shrunk but keep every feature."""
    from pathlib import Path

    from zmaj_lm.config import load_config

    path = Path(__file__).parents[3] / "configs" / "models" / f"{preset}.yaml"
    cfg = load_config(
        path, ["model.n_layers=2", "model.vocab_size=128", "model.max_seq_len=64"]
    ).model
    heads_per_kv = cfg.n_heads // cfg.n_kv_heads
    cfg = cfg.model_copy(
        update={
            "d_model": 64,
            "n_heads": 2 * heads_per_kv,
            "n_kv_heads": 2,
            "head_dim": 16,
            "d_ff": 64,
        }
    )
    cfg = ModelConfig.model_validate(cfg.model_dump())
    torch.manual_seed(0)
    model = Transformer(cfg)
    compiled = torch.compile(model, fullgraph=True)
    ids = torch.randint(0, 128, (2, 32))
    doc = torch.cat([torch.zeros(2, 20, dtype=torch.long), torch.ones(2, 12, dtype=torch.long)], 1)
    out = compiled(ids, document_ids=doc).logits
    out.sum().backward()
    torch.testing.assert_close(out, model(ids, document_ids=doc).logits, atol=1e-4, rtol=1e-4)
