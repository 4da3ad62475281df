"""Qwen3-MoE: Qwen3 attention with token-choice top-k experts.

On disk (what ``save_pretrained`` writes in transformers 5.23 and what the Hub holds) every expert
is its own module: ``mlp.experts.{e}.gate_proj.weight``. transformers 5 fuses them in memory into
``mlp.experts.gate_up_proj`` (E, 2F, D) and ``mlp.experts.down_proj`` (E, D, F); that fused layout
is also accepted on import. Export writes the per-expert layout, which every version loads.
"""

from typing import Any

from zmaj_lm.config.model import ModelConfig, MoEConfig
from zmaj_lm.interop.families._common import (
    build_config,
    check,
    llama_like_fields,
    llama_like_to_hf,
    require,
    standard_checks,
    windows,
)
from zmaj_lm.interop.families.qwen3 import QWEN3_WEIGHTS
from zmaj_lm.interop.spec import ConversionError, Family, Split, Stacked, Target

_FUSED_GATE_UP = "model.layers.{}.mlp.experts.gate_up_proj"
_FUSED_DOWN = "model.layers.{}.mlp.experts.down_proj"

QWEN3_MOE_WEIGHTS: dict[str, Target] = QWEN3_WEIGHTS | {
    "model.layers.{}.mlp.gate.weight": "layers.{}.mlp.router.weight",
    "model.layers.{}.mlp.experts.{}.gate_proj.weight": Stacked("layers.{}.mlp.gate_proj"),
    "model.layers.{}.mlp.experts.{}.up_proj.weight": Stacked("layers.{}.mlp.up_proj"),
    "model.layers.{}.mlp.experts.{}.down_proj.weight": Stacked("layers.{}.mlp.down_proj"),
    _FUSED_GATE_UP: Split(("layers.{}.mlp.gate_proj", "layers.{}.mlp.up_proj"), dim=1),
    _FUSED_DOWN: "layers.{}.mlp.down_proj",
}


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    fields = llama_like_fields(hf, tie_default=False)
    n_layers = fields["n_layers"]
    n_experts = int(hf.get("num_experts") or require(hf, "num_local_experts"))
    step = int(hf.get("decoder_sparse_step") or 1)
    dense = set(hf.get("mlp_only_layers") or [])
    moe_layers = [i not in dense and n_experts > 0 and (i + 1) % step == 0 for i in range(n_layers)]
    bias = bool(hf.get("attention_bias", False))
    window = hf.get("sliding_window") if hf.get("use_sliding_window") else None
    if hf.get("layer_types") is not None:
        raise ConversionError(["config.json: layer_types: not supported for qwen3_moe"])
    return build_config(
        fields
        | {
            "qkv_bias": bias,
            "o_bias": bias,
            "qk_norm": "head",
            "sliding_window": int(window) if window is not None else None,
            "moe": MoEConfig(
                n_experts=n_experts,
                top_k=int(require(hf, "num_experts_per_tok")),
                d_expert=int(require(hf, "moe_intermediate_size")),
                normalize_top_k=bool(hf.get("norm_topk_prob", False)),
                aux_loss_coef=float(hf.get("router_aux_loss_coef", 0.001)),
            ),
            "moe_layers": moe_layers if not all(moe_layers) else True,
        }
    )


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    assert config.moe is not None
    window = windows(config)[0]
    return llama_like_to_hf(config) | {
        "attention_bias": config.qkv_bias,
        "use_sliding_window": window is not None,
        "sliding_window": window,
        "num_experts": config.moe.n_experts,
        "num_experts_per_tok": config.moe.top_k,
        "moe_intermediate_size": config.moe.d_expert,
        "norm_topk_prob": config.moe.normalize_top_k,
        "router_aux_loss_coef": config.moe.aux_loss_coef,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [i for i in range(config.n_layers) if not config.layer_uses_moe(i)],
    }


def unsupported(config: ModelConfig) -> list[str]:
    problems = standard_checks(config, qk_norm="head", moe=True)
    check(problems, config.qkv_bias == config.o_bias, "qkv_bias != o_bias")
    check(problems, not config.mlp_bias, "mlp_bias")
    check(problems, len(set(windows(config))) == 1, "per-layer sliding_window")
    if config.moe is not None:
        check(
            problems,
            config.moe.shared_expert_d_ff is None,
            "moe.shared_expert_d_ff (shared expert)",
        )
    return problems


FAMILY = Family(
    model_type="qwen3_moe",
    architecture="Qwen3MoeForCausalLM",
    weights=QWEN3_MOE_WEIGHTS,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    unsupported=unsupported,
    import_only=frozenset({_FUSED_GATE_UP, _FUSED_DOWN}),
)
