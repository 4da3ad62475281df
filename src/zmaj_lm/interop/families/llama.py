"""Llama 2/3 (TinyLlama, SmolLM, Llama-3.x with its RoPE scaling): the reference layout.

Our module names follow Llama checkpoints, so the map is the identity up to the ``model.`` prefix
and the role-named norms.
"""

from typing import Any

from zmaj_lm.config.model import ModelConfig
from zmaj_lm.interop.families._common import (
    build_config,
    check,
    llama_like_fields,
    llama_like_to_hf,
    standard_checks,
    windows,
)
from zmaj_lm.interop.spec import Family, Target

LLAMA_WEIGHTS: dict[str, Target] = {
    "model.embed_tokens.weight": "embed_tokens.weight",
    "model.layers.{}.self_attn.q_proj.weight": "layers.{}.self_attn.q_proj.weight",
    "model.layers.{}.self_attn.k_proj.weight": "layers.{}.self_attn.k_proj.weight",
    "model.layers.{}.self_attn.v_proj.weight": "layers.{}.self_attn.v_proj.weight",
    "model.layers.{}.self_attn.o_proj.weight": "layers.{}.self_attn.o_proj.weight",
    "model.layers.{}.self_attn.q_proj.bias": "layers.{}.self_attn.q_proj.bias",
    "model.layers.{}.self_attn.k_proj.bias": "layers.{}.self_attn.k_proj.bias",
    "model.layers.{}.self_attn.v_proj.bias": "layers.{}.self_attn.v_proj.bias",
    "model.layers.{}.self_attn.o_proj.bias": "layers.{}.self_attn.o_proj.bias",
    "model.layers.{}.self_attn.rotary_emb.inv_freq": None,
    "model.layers.{}.mlp.gate_proj.weight": "layers.{}.mlp.gate_proj.weight",
    "model.layers.{}.mlp.up_proj.weight": "layers.{}.mlp.up_proj.weight",
    "model.layers.{}.mlp.down_proj.weight": "layers.{}.mlp.down_proj.weight",
    "model.layers.{}.mlp.gate_proj.bias": "layers.{}.mlp.gate_proj.bias",
    "model.layers.{}.mlp.up_proj.bias": "layers.{}.mlp.up_proj.bias",
    "model.layers.{}.mlp.down_proj.bias": "layers.{}.mlp.down_proj.bias",
    "model.layers.{}.input_layernorm.weight": "layers.{}.attn_norm.weight",
    "model.layers.{}.post_attention_layernorm.weight": "layers.{}.mlp_norm.weight",
    "model.norm.weight": "norm.weight",
    "model.rotary_emb.inv_freq": None,
    "lm_head.weight": "lm_head.weight",
}
"""Pre-norm Llama layout; bias entries only match checkpoints that have biases."""


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    bias = bool(hf.get("attention_bias", False))
    return build_config(
        llama_like_fields(hf, tie_default=False)
        | {"qkv_bias": bias, "o_bias": bias, "mlp_bias": bool(hf.get("mlp_bias", False))}
    )


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    return llama_like_to_hf(config) | {
        "attention_bias": config.qkv_bias,
        "mlp_bias": config.mlp_bias,
        "pretraining_tp": 1,
    }


def unsupported(config: ModelConfig) -> list[str]:
    problems = standard_checks(config)
    check(problems, config.qkv_bias == config.o_bias, "qkv_bias != o_bias")
    check(problems, all(w is None for w in windows(config)), "sliding_window")
    return problems


FAMILY = Family(
    model_type="llama",
    architecture="LlamaForCausalLM",
    weights=LLAMA_WEIGHTS,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    unsupported=unsupported,
)
