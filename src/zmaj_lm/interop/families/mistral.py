"""Mistral: the Llama layout with one sliding window for every layer (``null`` for none)."""

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
    if hf.get("layer_types") is not None:
        raise ConversionError(
            ["config.json: layer_types: per-layer attention types are not supported for mistral"]
        )
    window = hf.get("sliding_window")
    return build_config(
        llama_like_fields(hf, tie_default=False)
        | {"sliding_window": int(window) if window is not None else None}
    )


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    return llama_like_to_hf(config) | {"sliding_window": windows(config)[0]}


def unsupported(config: ModelConfig) -> list[str]:
    problems = standard_checks(config)
    check(problems, not (config.qkv_bias or config.o_bias or config.mlp_bias), "biases")
    check(problems, len(set(windows(config))) == 1, "per-layer sliding_window")
    return problems


FAMILY = Family(
    model_type="mistral",
    architecture="MistralForCausalLM",
    weights=LLAMA_WEIGHTS,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    unsupported=unsupported,
)
