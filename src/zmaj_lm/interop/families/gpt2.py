"""GPT-2: learned positions, LayerNorm with bias, fused QKV, ``Conv1D`` (in, out) weights.

Two transforms carry the whole difference: ``Conv1D`` weights are ``nn.Linear`` weights
transposed, and ``c_attn`` is q, k and v concatenated. The original ``gpt2`` upload names tensors
without the ``transformer.`` prefix and stores the causal-mask buffers ``attn.bias`` and
``attn.masked_bias``; both are accepted (the buffers dropped, they hold no weights).
"""

import math
from typing import Any

from zmaj_lm.config.model import ModelConfig
from zmaj_lm.interop.families._common import (
    OUR_ACTIVATIONS,
    activation_from_hf,
    build_config,
    check,
    require,
    windows,
)
from zmaj_lm.interop.spec import ConversionError, Family, Split, Target, Transposed

_QKV = (
    "layers.{}.self_attn.q_proj.weight",
    "layers.{}.self_attn.k_proj.weight",
    "layers.{}.self_attn.v_proj.weight",
)

GPT2_WEIGHTS: dict[str, Target] = {
    "transformer.wte.weight": "embed_tokens.weight",
    "transformer.wpe.weight": "embed_positions.weight",
    "transformer.h.{}.ln_1.weight": "layers.{}.attn_norm.weight",
    "transformer.h.{}.ln_1.bias": "layers.{}.attn_norm.bias",
    "transformer.h.{}.attn.c_attn.weight": Split(_QKV, dim=0, transpose=True),
    "transformer.h.{}.attn.c_attn.bias": Split(tuple(n.replace("weight", "bias") for n in _QKV)),
    "transformer.h.{}.attn.c_proj.weight": Transposed("layers.{}.self_attn.o_proj.weight"),
    "transformer.h.{}.attn.c_proj.bias": "layers.{}.self_attn.o_proj.bias",
    "transformer.h.{}.attn.bias": None,
    "transformer.h.{}.attn.masked_bias": None,
    "transformer.h.{}.ln_2.weight": "layers.{}.mlp_norm.weight",
    "transformer.h.{}.ln_2.bias": "layers.{}.mlp_norm.bias",
    "transformer.h.{}.mlp.c_fc.weight": Transposed("layers.{}.mlp.up_proj.weight"),
    "transformer.h.{}.mlp.c_fc.bias": "layers.{}.mlp.up_proj.bias",
    "transformer.h.{}.mlp.c_proj.weight": Transposed("layers.{}.mlp.down_proj.weight"),
    "transformer.h.{}.mlp.c_proj.bias": "layers.{}.mlp.down_proj.bias",
    "transformer.ln_f.weight": "norm.weight",
    "transformer.ln_f.bias": "norm.bias",
    "lm_head.weight": "lm_head.weight",
}


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    if hf.get("scale_attn_by_inverse_layer_idx"):
        raise ConversionError(
            ["config.json: scale_attn_by_inverse_layer_idx: per-layer attention scale unsupported"]
        )
    if hf.get("add_cross_attention"):
        raise ConversionError(["config.json: add_cross_attention: cross-attention unsupported"])
    d_model = int(require(hf, "n_embd"))
    return build_config(
        {
            "vocab_size": int(require(hf, "vocab_size")),
            "d_model": d_model,
            "n_layers": int(require(hf, "n_layer")),
            "n_heads": int(require(hf, "n_head")),
            "d_ff": int(hf.get("n_inner") or 4 * d_model),
            "max_seq_len": int(require(hf, "n_positions")),
            "embedding_positions": "learned",
            "rope": None,
            "qkv_bias": True,
            "o_bias": True,
            "attn_scale": None if hf.get("scale_attn_weights", True) else 1.0,
            "attn_dropout": float(hf.get("attn_pdrop", 0.1)),
            "norm": "layernorm",
            "norm_bias": True,
            "norm_eps": float(hf.get("layer_norm_epsilon", 1e-5)),
            "activation": activation_from_hf(
                hf.get("activation_function", "gelu_new"), "activation_function"
            ),
            "gated": False,
            "mlp_bias": True,
            "tie_embeddings": bool(hf.get("tie_word_embeddings", True)),
            "dropout": float(hf.get("resid_pdrop", 0.1)),
            "init_std": float(hf.get("initializer_range", 0.02)),
        }
    )


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    return {
        "vocab_size": config.vocab_size,
        "n_positions": config.max_seq_len,
        "n_embd": config.d_model,
        "n_layer": config.n_layers,
        "n_head": config.n_heads,
        "n_inner": None if config.d_ff == 4 * config.d_model else config.d_ff,
        "activation_function": "gelu_new"
        if config.activation == "gelu_tanh"
        else OUR_ACTIVATIONS[config.activation],
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.attn_dropout,
        "layer_norm_epsilon": config.norm_eps,
        "initializer_range": config.init_std,
        "scale_attn_weights": config.attn_scale is None,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": config.tie_embeddings,
    }


def unsupported(config: ModelConfig) -> list[str]:
    problems: list[str] = []
    check(problems, config.embedding_positions == "learned", "no learned positions")
    check(problems, config.rope is None, "rope")
    check(problems, config.norm == "layernorm" and config.norm_bias, "norm without bias")
    check(problems, config.norm_placement == "pre", f"norm_placement={config.norm_placement}")
    check(problems, config.qk_norm == "none", f"qk_norm={config.qk_norm}")
    check(problems, not config.gated, "gated MLP")
    check(problems, config.activation in OUR_ACTIVATIONS, f"activation={config.activation}")
    check(problems, config.qkv_bias and config.o_bias and config.mlp_bias, "missing biases")
    check(problems, config.n_kv_heads == config.n_heads, "grouped-query attention")
    check(
        problems, config.head_dim * config.n_heads == config.d_model, "head_dim != d_model/n_heads"
    )
    check(
        problems,
        config.attn_scale is None
        or config.attn_scale == 1.0
        or math.isclose(config.attn_scale, config.head_dim**-0.5),
        f"attn_scale={config.attn_scale}",
    )
    check(problems, config.moe is None, "moe")
    check(problems, all(w is None for w in windows(config)), "sliding_window")
    check(problems, config.attn_logit_softcap is None, "attn_logit_softcap")
    check(problems, config.final_logit_softcap is None, "final_logit_softcap")
    check(problems, not config.scale_embeddings, "scale_embeddings")
    return problems


FAMILY = Family(
    model_type="gpt2",
    architecture="GPT2LMHeadModel",
    weights=GPT2_WEIGHTS,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    unsupported=unsupported,
    legacy_prefix="transformer.",
)
