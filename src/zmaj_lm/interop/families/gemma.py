"""Gemma (1): the Llama layout with ``(1 + w)`` RMSNorm and embeddings scaled by sqrt(d_model).

Gemma stores norm weights around zero; our RMSNorm's ``unit_offset`` form keeps them as they are,
so the tensors map unchanged (an exported Gemma whose norms were shifted by one is the garbage
output litgpt #1762 describes).
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
from zmaj_lm.interop.spec import ConversionError, Family


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    hf = dict(hf)
    if hf.get("use_bidirectional_attention"):
        raise ConversionError(
            ["config.json: use_bidirectional_attention: bidirectional attention is not supported"]
        )
    act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    hf["hidden_act"] = act
    bias = bool(hf.get("attention_bias", False))
    return build_config(
        llama_like_fields(hf, tie_default=True)
        | {
            "qkv_bias": bias,
            "o_bias": bias,
            "norm_unit_offset": True,
            "scale_embeddings": True,
        }
    )


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    return llama_like_to_hf(config) | {"attention_bias": config.qkv_bias}


def unsupported(config: ModelConfig) -> list[str]:
    problems = standard_checks(config, gemma_norms=True)
    check(problems, config.qkv_bias == config.o_bias, "qkv_bias != o_bias")
    check(problems, not config.mlp_bias, "mlp_bias")
    check(problems, all(w is None for w in windows(config)), "sliding_window")
    return problems


FAMILY = Family(
    model_type="gemma",
    architecture="GemmaForCausalLM",
    weights=LLAMA_WEIGHTS,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    unsupported=unsupported,
)
