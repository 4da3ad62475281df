"""Qwen2 / Qwen2.5: the Llama layout with q/k/v biases (no o_proj bias) and per-layer windows."""

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
    windows,
)
from zmaj_lm.interop.families.llama import LLAMA_WEIGHTS
from zmaj_lm.interop.spec import Family


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    fields = llama_like_fields(hf, tie_default=False)
    return build_config(
        fields
        | {
            "qkv_bias": True,
            "sliding_window": compact_windows(layer_types_from_hf(hf, fields["n_layers"])),
        }
    )


def windows_to_hf(config: ModelConfig) -> dict[str, Any]:
    """``use_sliding_window``, ``sliding_window``, ``max_window_layers`` and ``layer_types``.

    ``max_window_layers`` is set to the first sliding layer when the pattern is "full, then
    sliding" (what transformers 4 can express); ``layer_types`` states any pattern exactly.
    """
    per_layer = windows(config)
    sizes = {w for w in per_layer if w is not None}
    window = sizes.pop() if sizes else None
    fields: dict[str, Any] = {
        "use_sliding_window": window is not None,
        "sliding_window": window,
        "layer_types": ["full_attention" if w is None else "sliding_attention" for w in per_layer],
    }
    if window is not None:
        fields["max_window_layers"] = next(i for i, w in enumerate(per_layer) if w is not None)
    return fields


def window_problems(config: ModelConfig) -> list[str]:
    sizes = {w for w in windows(config) if w is not None}
    return ["sliding windows of different sizes"] if len(sizes) > 1 else []


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    fields = llama_like_to_hf(config) | windows_to_hf(config)
    if config.head_dim * config.n_heads == config.d_model:
        fields.pop("head_dim")
    return fields


def unsupported(config: ModelConfig) -> list[str]:
    problems = standard_checks(config) + window_problems(config)
    check(problems, config.qkv_bias, "qkv_bias=False")
    check(problems, not config.o_bias, "o_bias")
    check(problems, not config.mlp_bias, "mlp_bias")
    return problems


FAMILY = Family(
    model_type="qwen2",
    architecture="Qwen2ForCausalLM",
    weights=LLAMA_WEIGHTS,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    unsupported=unsupported,
)
