"""Config helpers shared by the families: RoPE, activations, sliding windows, feature checks.

HF ``config.json`` files come in two generations: transformers 4 writes ``rope_theta`` and
``rope_scaling`` at the top level, transformers 5 one ``rope_parameters`` mapping. Both are read.
Exported configs carry both forms, so transformers 4 readers do not silently fall back to the
default theta (the "wrong rope_base" drift litgpt #2217 describes).
"""

import math
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from zmaj_lm.config.model import (
    LinearRopeScaling,
    Llama3RopeScaling,
    ModelConfig,
    RopeConfig,
    YarnRopeScaling,
)
from zmaj_lm.interop.spec import ConversionError

HF_ACTIVATIONS: dict[str, str] = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "relu": "relu",
    "relu2": "relu2",
}
"""transformers ``ACT2FN`` names -> our activation names (only exact equivalents)."""

OUR_ACTIVATIONS: dict[str, str] = {
    "silu": "silu",
    "gelu": "gelu",
    "gelu_tanh": "gelu_pytorch_tanh",
    "relu": "relu",
    "relu2": "relu2",
}
"""Our activation names -> the transformers name written on export."""


def require(hf: Mapping[str, Any], key: str) -> Any:
    """``hf[key]``, or a :class:`ConversionError` naming the missing field."""
    value = hf.get(key)
    if value is None:
        raise ConversionError([f"config.json: {key}: missing"])
    return value


def activation_from_hf(name: Any, key: str = "hidden_act") -> str:
    """Our activation for transformers' ``name``; unknown names are refused, never guessed."""
    if not isinstance(name, str) or name not in HF_ACTIVATIONS:
        raise ConversionError(
            [f"config.json: {key}: activation {name!r} has no exact equivalent here"]
        )
    return HF_ACTIVATIONS[name]


def _rope_parameters(hf: Mapping[str, Any]) -> dict[str, Any]:
    """One flat rope mapping from either config generation (``rope_type``, ``rope_theta``, ...)."""
    params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if not isinstance(params, Mapping):
        raise ConversionError(["config.json: rope_parameters: expected a mapping"])
    params = dict(params)
    if any(isinstance(v, Mapping) for v in params.values()):
        raise ConversionError(
            ["config.json: rope_parameters: per-layer-type RoPE settings are not supported"]
        )
    params.setdefault("rope_type", params.pop("type", "default"))
    params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
    if "partial_rotary_factor" not in params and hf.get("partial_rotary_factor") is not None:
        params["partial_rotary_factor"] = hf["partial_rotary_factor"]
    return params


def rope_from_hf(hf: Mapping[str, Any]) -> RopeConfig:
    """Our :class:`RopeConfig` for a config.json; unsupported RoPE types are refused by name."""
    p = _rope_parameters(hf)
    kind = p["rope_type"]
    theta = float(p["rope_theta"])
    partial = float(p.get("partial_rotary_factor") or 1.0)
    original = p.get("original_max_position_embeddings") or hf.get(
        "original_max_position_embeddings", hf.get("max_position_embeddings")
    )
    scaling: LinearRopeScaling | Llama3RopeScaling | YarnRopeScaling | None
    if kind == "default":
        scaling = None
    elif kind == "linear":
        scaling = LinearRopeScaling(factor=float(p["factor"]))
    elif kind == "llama3":
        scaling = Llama3RopeScaling(
            factor=float(p["factor"]),
            low_freq_factor=float(p["low_freq_factor"]),
            high_freq_factor=float(p["high_freq_factor"]),
            original_max_position_embeddings=int(original),
        )
    elif kind == "yarn":
        factor = p.get("factor")
        if factor is None:
            factor = hf["max_position_embeddings"] / original
        if p.get("truncate", True) is False:
            raise ConversionError(
                ["config.json: rope_parameters.truncate: untruncated YaRN ranges are not supported"]
            )
        attention_factor = p.get("attention_factor")
        mscale, mscale_all_dim = p.get("mscale"), p.get("mscale_all_dim")
        if attention_factor is None and mscale and mscale_all_dim:

            def get_mscale(scale: float, m: float) -> float:
                return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

            attention_factor = get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
        scaling = YarnRopeScaling(
            factor=float(factor),
            original_max_position_embeddings=int(original),
            beta_fast=float(p.get("beta_fast") or 32.0),
            beta_slow=float(p.get("beta_slow") or 1.0),
            attention_factor=attention_factor,
        )
    else:
        raise ConversionError(
            [f"config.json: rope_parameters.rope_type: {kind!r} RoPE is not supported"]
        )
    return RopeConfig(theta=theta, partial_rotary_factor=partial, scaling=scaling)


def rope_to_hf(rope: RopeConfig) -> dict[str, Any]:
    """``rope_parameters`` (transformers 5), plus ``rope_theta``/``rope_scaling`` (version 4)."""
    params: dict[str, Any] = {"rope_theta": rope.theta, "rope_type": "default"}
    s = rope.scaling
    if isinstance(s, LinearRopeScaling):
        params |= {"rope_type": "linear", "factor": s.factor}
    elif isinstance(s, Llama3RopeScaling):
        params |= {
            "rope_type": "llama3",
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        }
    elif isinstance(s, YarnRopeScaling):
        params |= {
            "rope_type": "yarn",
            "factor": s.factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        }
        if (s.beta_fast, s.beta_slow) != (32.0, 1.0):
            params |= {"beta_fast": s.beta_fast, "beta_slow": s.beta_slow}
        if s.attention_factor is not None:
            params["attention_factor"] = s.attention_factor
    legacy = {k: v for k, v in params.items() if k != "rope_theta"}
    return {
        "rope_parameters": params,
        "rope_theta": rope.theta,
        "rope_scaling": legacy if legacy["rope_type"] != "default" else None,
    }


def build_config(fields: dict[str, Any]) -> ModelConfig:
    """Validate our config, turning pydantic's errors into one line per problem."""
    try:
        return ModelConfig(**fields)
    except ValidationError as err:
        raise ConversionError(
            [
                f"converted config: {'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}"
                for e in err.errors()
            ]
        ) from err


def llama_like_fields(hf: Mapping[str, Any], *, tie_default: bool) -> dict[str, Any]:
    """Fields every Llama-descended config.json spells the same way."""
    n_heads = int(require(hf, "num_attention_heads"))
    d_model = int(require(hf, "hidden_size"))
    return {
        "vocab_size": int(require(hf, "vocab_size")),
        "d_model": d_model,
        "n_layers": int(require(hf, "num_hidden_layers")),
        "n_heads": n_heads,
        "n_kv_heads": int(hf.get("num_key_value_heads") or n_heads),
        "head_dim": int(hf.get("head_dim") or d_model // n_heads),
        "d_ff": int(require(hf, "intermediate_size")),
        "max_seq_len": int(require(hf, "max_position_embeddings")),
        "rope": rope_from_hf(hf),
        "norm": "rmsnorm",
        "norm_eps": float(require(hf, "rms_norm_eps")),
        "activation": activation_from_hf(hf.get("hidden_act", "silu")),
        "gated": True,
        "tie_embeddings": bool(hf.get("tie_word_embeddings", tie_default)),
        "attn_dropout": float(hf.get("attention_dropout") or 0.0),
        "init_std": float(hf.get("initializer_range") or 0.02),
    }


def llama_like_to_hf(config: ModelConfig) -> dict[str, Any]:
    """The config.json fields shared by the Llama-descended families."""
    assert config.rope is not None
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": OUR_ACTIVATIONS[config.activation],
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "initializer_range": config.init_std,
        "tie_word_embeddings": config.tie_embeddings,
        "attention_dropout": config.attn_dropout,
        **rope_to_hf(config.rope),
    }


def windows(config: ModelConfig) -> list[int | None]:
    """Sliding window of each layer."""
    return [config.layer_window(i) for i in range(config.n_layers)]


def layer_types_from_hf(hf: Mapping[str, Any], n_layers: int) -> list[int | None]:
    """Per-layer windows of Qwen2/Qwen3: ``layer_types`` when present (transformers 5), else
    ``use_sliding_window`` with layers ``>= max_window_layers`` sliding (transformers 4)."""
    window = hf.get("sliding_window") if hf.get("use_sliding_window") else None
    types = hf.get("layer_types")
    if types is None:
        max_window_layers = int(hf.get("max_window_layers") or 0)
        types = [
            "sliding_attention"
            if window is not None and i >= max_window_layers
            else "full_attention"
            for i in range(n_layers)
        ]
    if len(types) != n_layers:
        raise ConversionError(
            [f"config.json: layer_types: {len(types)} entries for {n_layers} layers"]
        )
    result: list[int | None] = []
    for i, kind in enumerate(types):
        if kind == "full_attention":
            result.append(None)
        elif kind == "sliding_attention":
            if window is None:
                raise ConversionError(
                    [f"config.json: layer_types[{i}]: sliding_attention but no sliding_window"]
                )
            result.append(int(window))
        else:
            raise ConversionError([f"config.json: layer_types[{i}]: {kind!r} is not supported"])
    return result


def compact_windows(per_layer: list[int | None]) -> int | list[int | None] | None:
    """One value when every layer agrees, else the per-layer list."""
    return per_layer[0] if len(set(per_layer)) == 1 else per_layer


def common_unsupported(config: ModelConfig) -> list[str]:
    """Features no Llama-descended family here expresses."""
    problems: list[str] = []
    if config.embedding_positions != "none":
        problems.append(f"embedding_positions={config.embedding_positions}")
    if config.rope is None:
        problems.append("rope=None (no rotary embedding)")
    else:
        if not all(config.layer_uses_rope(i) for i in range(config.n_layers)):
            problems.append("rope_layers (NoPE layers)")
        if config.rope.partial_rotary_factor != 1.0:
            problems.append(f"rope.partial_rotary_factor={config.rope.partial_rotary_factor}")
    if config.norm != "rmsnorm":
        problems.append(f"norm={config.norm}")
    if config.attn_logit_softcap is not None:
        problems.append(f"attn_logit_softcap={config.attn_logit_softcap}")
    if config.final_logit_softcap is not None:
        problems.append(f"final_logit_softcap={config.final_logit_softcap}")
    if config.attn_scale is not None and not math.isclose(config.attn_scale, config.head_dim**-0.5):
        problems.append(f"attn_scale={config.attn_scale} (HF uses 1/sqrt(head_dim))")
    if not config.gated:
        problems.append("gated=False (ungated MLP)")
    if config.activation not in OUR_ACTIVATIONS:
        problems.append(f"activation={config.activation}")
    return problems


def check(problems: list[str], ok: bool, feature: str) -> None:
    """Record ``feature`` as unsupported unless ``ok``."""
    if not ok:
        problems.append(feature)


def standard_checks(
    config: ModelConfig,
    *,
    placement: str = "pre",
    qk_norm: str = "none",
    gemma_norms: bool = False,
    moe: bool = False,
) -> list[str]:
    """Common checks plus the handful of switches the Llama-like families differ in."""
    problems = common_unsupported(config)
    check(problems, config.norm_placement == placement, f"norm_placement={config.norm_placement}")
    check(problems, config.qk_norm == qk_norm, f"qk_norm={config.qk_norm}")
    check(
        problems,
        config.norm_unit_offset == gemma_norms,
        f"norm_unit_offset={config.norm_unit_offset}",
    )
    check(
        problems,
        config.scale_embeddings == gemma_norms,
        f"scale_embeddings={config.scale_embeddings}",
    )
    check(problems, (config.moe is not None) == moe, "moe" if config.moe else "no moe")
    return problems
