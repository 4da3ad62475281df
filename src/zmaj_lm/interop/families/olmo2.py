"""OLMo 2: post-sublayer norms (x + norm(f(x))) and RMSNorm over the whole q/k projections.

transformers names the norm after attention ``post_attention_layernorm`` here, the same name
Llama uses for the norm *before* the MLP; our role names keep the two apart.
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
from zmaj_lm.interop.families.llama import LLAMA_WEIGHTS
from zmaj_lm.interop.spec import Family, Target

_PRE_NORMS = (
    "model.layers.{}.input_layernorm.weight",
    "model.layers.{}.post_attention_layernorm.weight",
)

OLMO2_WEIGHTS: dict[str, Target] = {
    k: v for k, v in LLAMA_WEIGHTS.items() if k not in _PRE_NORMS
} | {
    "model.layers.{}.self_attn.q_norm.weight": "layers.{}.self_attn.q_norm.weight",
    "model.layers.{}.self_attn.k_norm.weight": "layers.{}.self_attn.k_norm.weight",
    "model.layers.{}.post_attention_layernorm.weight": "layers.{}.attn_out_norm.weight",
    "model.layers.{}.post_feedforward_layernorm.weight": "layers.{}.mlp_out_norm.weight",
}


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    bias = bool(hf.get("attention_bias", False))
    return build_config(
        llama_like_fields(hf, tie_default=False)
        | {"qkv_bias": bias, "o_bias": bias, "qk_norm": "full", "norm_placement": "post"}
    )


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    fields = llama_like_to_hf(config) | {"attention_bias": config.qkv_bias}
    fields.pop("head_dim")
    return fields


def unsupported(config: ModelConfig) -> list[str]:
    problems = standard_checks(config, placement="post", qk_norm="full")
    check(problems, config.qkv_bias == config.o_bias, "qkv_bias != o_bias")
    check(problems, not config.mlp_bias, "mlp_bias")
    check(
        problems,
        config.head_dim * config.n_heads == config.d_model,
        "head_dim != d_model / n_heads",
    )
    check(problems, all(w is None for w in windows(config)), "sliding_window")
    return problems


FAMILY = Family(
    model_type="olmo2",
    architecture="Olmo2ForCausalLM",
    weights=OLMO2_WEIGHTS,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    unsupported=unsupported,
)
