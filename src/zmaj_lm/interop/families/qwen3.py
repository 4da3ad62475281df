"""Qwen3 (dense): Qwen2 without the forced biases, plus per-head RMSNorm on queries and keys."""

from typing import Any

from zmaj_lm.config.model import ModelConfig
from zmaj_lm.interop.families._common import (
    build_config,
    check,
    compact_windows,
    layer_types_from_hf,
    llama_like_fields,
    llama_like_to_hf,
    standard_checks,
)
from zmaj_lm.interop.families.llama import LLAMA_WEIGHTS
from zmaj_lm.interop.families.qwen2 import window_problems, windows_to_hf
from zmaj_lm.interop.spec import Family, Target

QWEN3_WEIGHTS: dict[str, Target] = LLAMA_WEIGHTS | {
    "model.layers.{}.self_attn.q_norm.weight": "layers.{}.self_attn.q_norm.weight",
    "model.layers.{}.self_attn.k_norm.weight": "layers.{}.self_attn.k_norm.weight",
}


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    fields = llama_like_fields(hf, tie_default=False)
    bias = bool(hf.get("attention_bias", False))
    return build_config(
        fields
        | {
            "qkv_bias": bias,
            "o_bias": bias,
            "qk_norm": "head",
            "sliding_window": compact_windows(layer_types_from_hf(hf, fields["n_layers"])),
        }
    )


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    return llama_like_to_hf(config) | windows_to_hf(config) | {"attention_bias": config.qkv_bias}


def unsupported(config: ModelConfig) -> list[str]:
    problems = standard_checks(config, qk_norm="head") + window_problems(config)
    check(problems, config.qkv_bias == config.o_bias, "qkv_bias != o_bias")
    check(problems, not config.mlp_bias, "mlp_bias")
    return problems


FAMILY = Family(
    model_type="qwen3",
    architecture="Qwen3ForCausalLM",
    weights=QWEN3_WEIGHTS,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    unsupported=unsupported,
)
