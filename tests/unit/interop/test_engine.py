"""The engine and family maps without transformers: inversion, errors, config mapping, choice.

* every family's map is its own inverse: our random weights exported and imported again are
  bitwise equal, and ``config_from_hf(config_to_hf(c)) == c``;
* problems (unexpected, missing, mis-shaped, incomplete experts, an untied "tied" head) are all
  listed at once;
* the family for export is chosen from a config's features, and a feature no family expresses is
  refused by name.
"""

from typing import Any

import pytest
import torch

from zmaj_lm.config.model import ModelConfig
from zmaj_lm.interop.convert import parse_size
from zmaj_lm.interop.engine import export_state, import_state, plan_export
from zmaj_lm.interop.families import FAMILIES, choose_family
from zmaj_lm.interop.spec import ConversionError
from zmaj_lm.models.transformer import Transformer

BASE: dict[str, Any] = {
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6,
}
HF_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": BASE | {"attention_bias": True, "tie_word_embeddings": True},
    "mistral": BASE | {"sliding_window": 16, "head_dim": 16},
    "qwen2": BASE
    | {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1, "rope_theta": 1e6},
    "qwen3": BASE
    | {
        "head_dim": 16,
        "layer_types": ["sliding_attention", "full_attention"],
        "use_sliding_window": True,
        "sliding_window": 4,
    },
    "qwen3_moe": BASE
    | {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 16,
        "mlp_only_layers": [0],
        "norm_topk_prob": True,
    },
    "gemma": BASE | {"head_dim": 16, "hidden_act": "gelu_pytorch_tanh"},
    "olmo2": BASE,
    "gpt2": {"vocab_size": 64, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64},
}


def _model(config: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = Transformer(config).state_dict()
    if config.tie_embeddings:
        state.pop("lm_head.weight")
    return {k: v + 0.01 * torch.randn_like(v) for k, v in state.items()}


@pytest.mark.parametrize("family_name", sorted(HF_CONFIGS))
def test_map_is_its_own_inverse(family_name: str) -> None:
    family = FAMILIES[family_name]
    config = family.config_from_hf(HF_CONFIGS[family_name])
    assert family.unsupported(config) == []
    assert choose_family(config, prefer=family_name) is family
    assert family.config_from_hf(family.config_to_hf(config)) == config
    ours = _model(config)
    plan_export(family, list(ours))
    hf = dict(export_state(family, config, list(ours), ours.__getitem__))
    back = import_state(family, config, list(hf), hf.__getitem__).state
    assert back.keys() == ours.keys()
    for key, tensor in ours.items():
        assert torch.equal(back[key], tensor), key


def _llama_hf() -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    family = FAMILIES["llama"]
    config = family.config_from_hf(BASE)
    ours = _model(config)
    return config, dict(export_state(family, config, list(ours), ours.__getitem__))


def test_all_problems_listed_together() -> None:
    config, hf = _llama_hf()
    hf["model.layers.0.extra.weight"] = torch.zeros(1)
    hf["model.layers.9.mlp.up_proj.weight"] = torch.zeros(48, 32)
    del hf["model.norm.weight"]
    hf["model.layers.1.self_attn.q_proj.weight"] = torch.zeros(8, 32)
    hf["model.rotary_emb.inv_freq"] = torch.zeros(4)
    with pytest.raises(ConversionError) as info:
        import_state(FAMILIES["llama"], config, list(hf), hf.__getitem__)
    assert sorted(info.value.problems) == sorted(
        [
            "model.layers.1.self_attn.q_proj.weight: shape (8, 32) but "
            "layers.1.self_attn.q_proj.weight needs (32, 32)",
            "model.layers.9.mlp.up_proj.weight: maps to layers.9.mlp.up_proj.weight, "
            "which this model config does not have",
            "unexpected tensor (no mapping rule): model.layers.0.extra.weight",
            "missing tensor (our model needs it): layers.1.self_attn.q_proj.weight",
            "missing tensor (our model needs it): norm.weight",
        ]
    )


def test_dropped_buffers_are_reported() -> None:
    config, hf = _llama_hf()
    hf["model.rotary_emb.inv_freq"] = torch.zeros(4)
    result = import_state(FAMILIES["llama"], config, list(hf), hf.__getitem__)
    assert result.dropped == ["model.rotary_emb.inv_freq"]


def test_tied_head_must_equal_embedding() -> None:
    family = FAMILIES["llama"]
    config = family.config_from_hf(BASE | {"tie_word_embeddings": True})
    ours = _model(config)
    hf = dict(export_state(family, config, list(ours), ours.__getitem__))
    hf["lm_head.weight"] = hf["model.embed_tokens.weight"].clone()
    assert "lm_head.weight" not in import_state(family, config, list(hf), hf.__getitem__).state
    hf["lm_head.weight"] += 1
    with pytest.raises(ConversionError, match="differs from the token embedding"):
        import_state(family, config, list(hf), hf.__getitem__)


def test_missing_and_extra_experts() -> None:
    family = FAMILIES["qwen3_moe"]
    config = family.config_from_hf(HF_CONFIGS["qwen3_moe"])
    ours = _model(config)
    hf = dict(export_state(family, config, list(ours), ours.__getitem__))
    del hf["model.layers.1.mlp.experts.2.up_proj.weight"]
    hf["model.layers.1.mlp.experts.7.down_proj.weight"] = torch.zeros(32, 16)
    with pytest.raises(ConversionError) as info:
        import_state(family, config, list(hf), hf.__getitem__)
    assert "layers.1.mlp.up_proj: experts [2] missing from the checkpoint" in info.value.problems
    assert (
        "model.layers.1.mlp.experts.7.down_proj.weight: expert 7 but the config has 4 experts"
        in info.value.problems
    )


def test_fused_experts_import_like_per_expert() -> None:
    """transformers 5's in-memory layout (gate_up_proj, down_proj) gives the same weights."""
    family = FAMILIES["qwen3_moe"]
    config = family.config_from_hf(HF_CONFIGS["qwen3_moe"])
    ours = _model(config)
    hf = dict(export_state(family, config, list(ours), ours.__getitem__))
    fused = {k: v for k, v in hf.items() if ".experts." not in k}
    gate = torch.stack([hf[f"model.layers.1.mlp.experts.{e}.gate_proj.weight"] for e in range(4)])
    up = torch.stack([hf[f"model.layers.1.mlp.experts.{e}.up_proj.weight"] for e in range(4)])
    down = torch.stack([hf[f"model.layers.1.mlp.experts.{e}.down_proj.weight"] for e in range(4)])
    fused["model.layers.1.mlp.experts.gate_up_proj"] = torch.cat([gate, up], dim=1)
    fused["model.layers.1.mlp.experts.down_proj"] = down
    back = import_state(family, config, list(fused), fused.__getitem__).state
    assert all(torch.equal(back[k], v) for k, v in ours.items())


def _config(**fields: Any) -> ModelConfig:
    return ModelConfig(
        vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=48, max_seq_len=64, **fields
    )


@pytest.mark.parametrize(
    ("fields", "family"),
    [
        ({}, "llama"),
        ({"sliding_window": 16}, "mistral"),
        ({"qkv_bias": True, "sliding_window": [None, 8]}, "qwen2"),
        ({"qk_norm": "head"}, "qwen3"),
        ({"qk_norm": "head", "moe": {"n_experts": 4, "top_k": 2, "d_expert": 8}}, "qwen3_moe"),
        ({"norm_unit_offset": True, "scale_embeddings": True, "activation": "gelu_tanh"}, "gemma"),
        ({"norm_placement": "post", "qk_norm": "full"}, "olmo2"),
        (
            {
                "embedding_positions": "learned",
                "rope": None,
                "norm": "layernorm",
                "norm_bias": True,
                "gated": False,
                "activation": "gelu_tanh",
                "qkv_bias": True,
                "o_bias": True,
                "mlp_bias": True,
            },
            "gpt2",
        ),
    ],
)
def test_family_chosen_from_features(fields: dict[str, Any], family: str) -> None:
    assert choose_family(_config(**fields)).model_type == family


@pytest.mark.parametrize(
    ("fields", "feature"),
    [
        ({"attn_logit_softcap": 50.0}, "attn_logit_softcap=50.0"),
        ({"final_logit_softcap": 30.0}, "final_logit_softcap=30.0"),
        ({"rope_layers": [True, False]}, "rope_layers (NoPE layers)"),
        ({"norm_placement": "sandwich"}, "norm_placement=sandwich"),
        ({"rope": {"partial_rotary_factor": 0.5}}, "rope.partial_rotary_factor=0.5"),
        ({"sliding_window": [4, 8]}, "sliding_window"),
        ({"activation": "relu2", "gated": False}, "gated=False (ungated MLP)"),
    ],
)
def test_unexpressible_feature_is_named(fields: dict[str, Any], feature: str) -> None:
    with pytest.raises(ConversionError, match="no transformers family") as info:
        choose_family(_config(**fields))
    assert feature in str(info.value)


def test_prefer_breaks_ties_and_force_is_checked() -> None:
    config = _config()
    assert choose_family(config, prefer="mistral").model_type == "mistral"
    assert choose_family(config, prefer="gemma").model_type == "llama"
    with pytest.raises(ConversionError, match=r"cannot export as gemma: .*norm_unit_offset"):
        choose_family(config, force="gemma")


@pytest.mark.parametrize(
    ("family", "hf", "message"),
    [
        ("llama", BASE | {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "'dynamic'"),
        ("llama", BASE | {"hidden_act": "mish"}, "hidden_act: activation 'mish'"),
        ("llama", {k: v for k, v in BASE.items() if k != "hidden_size"}, "hidden_size: missing"),
        ("gpt2", HF_CONFIGS["gpt2"] | {"scale_attn_by_inverse_layer_idx": True}, "per-layer"),
        ("qwen2", BASE | {"layer_types": ["chunked", "full_attention"]}, "'chunked'"),
    ],
)
def test_unsupported_hf_config_is_refused(family: str, hf: dict[str, Any], message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        FAMILIES[family].config_from_hf(hf)


def test_rope_matches_transformers_for_each_scaling() -> None:
    """Our RoPE from the mapped config equals what transformers computes from config.json."""
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from zmaj_lm.models.rope import rope_frequencies

    scalings = [
        {"rope_type": "linear", "factor": 4.0},
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
        {
            "rope_type": "yarn",
            "factor": 8.0,
            "original_max_position_embeddings": 32,
            "beta_fast": 16.0,
            "beta_slow": 2.0,
            "attention_factor": 1.3,
        },
        {
            "rope_type": "yarn",
            "factor": 8.0,
            "original_max_position_embeddings": 32,
            "mscale": 1.0,
            "mscale_all_dim": 0.5,
        },
    ]
    for scaling in scalings:
        hf = BASE | {"head_dim": 16, "rope_theta": 5e5, "rope_scaling": dict(scaling)}
        config = FAMILIES["llama"].config_from_hf(hf)
        assert config.rope is not None
        ours, ours_scale = rope_frequencies(config.rope, config.rotary_dim)
        hf_config = transformers.LlamaConfig(**hf)
        theirs, their_scale = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](hf_config, "cpu")
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0, msg=str(scaling))
        assert ours_scale == pytest.approx(their_scale), scaling


@pytest.mark.parametrize(
    ("text", "size"),
    [("5GB", 5_000_000_000), ("500MB", 500_000_000), ("2GiB", 2 * 2**30), ("1234", 1234)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_parse_size_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size("five gigs")


def test_gpt2_original_upload_layout() -> None:
    """The original ``gpt2`` upload: no ``transformer.`` prefix, causal-mask buffers stored."""
    family = FAMILIES["gpt2"]
    config = family.config_from_hf(HF_CONFIGS["gpt2"])
    ours = _model(config)
    hf = dict(export_state(family, config, list(ours), ours.__getitem__))
    legacy = {k.removeprefix("transformer."): v for k, v in hf.items()}
    legacy["h.0.attn.bias"] = torch.ones(1, 1, 64, 64)
    legacy["h.1.attn.masked_bias"] = torch.tensor(-1e4)
    result = import_state(family, config, list(legacy), legacy.__getitem__)
    assert sorted(result.dropped) == ["h.0.attn.bias", "h.1.attn.masked_bias"]
    assert all(torch.equal(result.state[k], v) for k, v in ours.items())


@pytest.mark.slow
def test_import_does_not_load_transformers() -> None:
    import subprocess
    import sys

    code = (
        "import sys, zmaj_lm.interop, zmaj_lm.interop.hub, zmaj_lm.interop.verify; "
        "print('transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
