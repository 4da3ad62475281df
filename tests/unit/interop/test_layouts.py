"""Full-size layouts map key-for-key, with shapes, on the meta device (no memory allocated).

transformers builds Llama-3.1-8B, Qwen3-8B and Qwen3-30B-A3B on ``meta`` from their config.json
values; the production family maps carry every tensor onto our Transformer built on ``meta`` from
the converted config, and back. Qwen3-MoE experts are fused in transformers 5's memory layout
(``experts.gate_up_proj``), which import accepts; export writes the per-expert layout found on
the Hub, checked here expert by expert.
"""

from typing import Any

import pytest
import torch

from zmaj_lm.interop.engine import expected_shapes, export_state, import_state, plan_export
from zmaj_lm.interop.families import FAMILIES
from zmaj_lm.models.transformer import Transformer

transformers = pytest.importorskip("transformers")

LLAMA31_8B: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "tie_word_embeddings": False,
}
QWEN3_8B: dict[str, Any] = {
    "model_type": "qwen3",
    "vocab_size": 151936,
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
    "use_sliding_window": False,
    "max_window_layers": 36,
}
QWEN3_30B_A3B: dict[str, Any] = {
    "model_type": "qwen3_moe",
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "moe_intermediate_size": 768,
    "num_hidden_layers": 48,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "norm_topk_prob": True,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
}


@pytest.mark.parametrize(
    "hf_config", [LLAMA31_8B, QWEN3_8B, QWEN3_30B_A3B], ids=lambda c: c["model_type"]
)
def test_full_size_layout_maps_key_for_key(hf_config: dict[str, Any]) -> None:
    family = FAMILIES[hf_config["model_type"]]
    config = family.config_from_hf(hf_config)
    auto = transformers.AutoConfig.for_model(**hf_config)
    with torch.device("meta"):
        hf = transformers.AutoModelForCausalLM.from_config(auto)
        ours = Transformer(config)
    hf_state = hf.state_dict()
    assert all(t.is_meta for t in hf_state.values())

    result = import_state(family, config, list(hf_state), hf_state.__getitem__)
    expected = expected_shapes(config)
    ours_state = {k: v for k, v in ours.state_dict().items() if k in expected}
    assert set(result.state) == set(ours_state)
    for name, tensor in result.state.items():
        assert tensor.shape == ours_state[name].shape, name

    plan_export(family, list(ours_state))
    exported = dict(export_state(family, config, list(ours_state), ours_state.__getitem__))
    if config.moe is None:
        assert {k: tuple(v.shape) for k, v in exported.items()} == {
            k: tuple(v.shape) for k, v in hf_state.items()
        }
    else:
        moe = config.moe
        expert_keys = [k for k in exported if ".mlp.experts." in k]
        assert len(expert_keys) == config.n_layers * moe.n_experts * 3
        assert exported["model.layers.47.mlp.experts.127.gate_proj.weight"].shape == (768, 2048)
        assert exported["model.layers.0.mlp.experts.0.down_proj.weight"].shape == (2048, 768)
        dense = {k: tuple(v.shape) for k, v in exported.items() if k not in expert_keys}
        fused = {k: tuple(v.shape) for k, v in hf_state.items() if ".mlp.experts." not in k}
        assert dense == fused
        again = import_state(family, config, list(exported), exported.__getitem__)
        assert set(again.state) == set(ours_state)
