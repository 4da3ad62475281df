"""Model checkpoints: safetensors with clean names, tied weights once, strict loading."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.unit.models.conftest import tiny_config
from zmaj_lm.config import ConfigError
from zmaj_lm.models import Transformer
from zmaj_lm.models.io import clean_state_dict, load_model, save_model


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("positions", ["none", "sinusoidal", "learned"])
def test_round_trip_gives_identical_logits(tmp_path: Path, tie: bool, positions: str) -> None:
    torch.manual_seed(0)
    rope = None if positions != "none" else {"theta": 500.0}
    model = Transformer(tiny_config(tie_embeddings=tie, embedding_positions=positions, rope=rope))
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    ids = torch.randint(0, 97, (2, 12))
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)
    assert (loaded.lm_head.weight is loaded.embed_tokens.weight) == tie
    assert ("lm_head.weight" in load_file(tmp_path / "model.safetensors")) == (not tie)


def test_compiled_and_wrapped_models_save_clean_names(tmp_path: Path) -> None:
    model = Transformer(tiny_config())
    save_model(torch.compile(model), tmp_path)
    keys = load_file(tmp_path / "model.safetensors").keys()
    assert not any("_orig_mod" in k or k.startswith("module.") for k in keys)
    assert clean_state_dict({"module._orig_mod.layers.0.x": torch.zeros(1)}) == {
        "layers.0.x": torch.zeros(1)
    }


def test_missing_or_unexpected_tensors_are_refused(tmp_path: Path) -> None:
    save_model(Transformer(tiny_config()), tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["layers.1.mlp.up_proj.weight"]
    weights["layers.9.extra"] = torch.zeros(1)
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(
        RuntimeError, match=r"(?s)Missing key\(s\).*up_proj.*Unexpected key\(s\).*extra"
    ):
        load_model(tmp_path)


def test_bad_config_names_the_file(tmp_path: Path) -> None:
    save_model(Transformer(tiny_config()), tmp_path)
    (tmp_path / "config.yaml").write_text("model:\n  vocab_size: -3\n")
    with pytest.raises(ConfigError, match=r"config\.yaml:model: vocab_size"):
        load_model(tmp_path)
