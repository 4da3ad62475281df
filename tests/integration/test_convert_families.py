"""Every family: HF -> ours gives the same logits and greedy tokens; ours -> HF is bitwise.

For each tiny random-weight transformers model (tests/unit/interop/tiny_hf.py):

* logits on a left-padded batch agree within 1e-4 (fp32, CPU) on real tokens: transformers gets
  the attention mask and position ids counting real tokens, ours document id -1 on padding and
  the same position ids;
* 32 greedy tokens from our KV-cached ``generate`` equal transformers' ``generate``;
* exporting the converted checkpoint reproduces every HF tensor bitwise, and a config.json that
  transformers reads back into an equal config.
"""

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.unit.interop.tiny_hf import FAMILY_CONFIGS, padded_batch, save_hf_model
from zmaj_lm.config.generation import SamplingConfig
from zmaj_lm.interop import convert_from_hf, convert_to_hf
from zmaj_lm.models.generation import generate
from zmaj_lm.models.io import load_model

transformers = pytest.importorskip("transformers")

CASES = sorted(FAMILY_CONFIGS)
EXPECTED_FAMILY = {"llama3": "llama", "tinyllama": "llama", "smollm": "llama"}
IGNORED_CONFIG_KEYS = {"transformers_version", "_name_or_path", "rope_scaling", "rope_theta"}


@pytest.fixture(scope="module", params=CASES)
def converted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    case = request.param
    root = tmp_path_factory.mktemp(case)
    hf = save_hf_model(case, root / "hf")
    convert_from_hf(root / "hf", root / "ours")
    ours = load_model(root / "ours").eval()
    return case, root, hf, ours


def test_logits_match_on_padded_batch(converted: Any) -> None:
    _, _, hf, ours = converted
    ids, mask = padded_batch()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        got = ours(ids, position_ids=positions, document_ids=torch.where(mask.bool(), 0, -1))
    real = mask.bool()
    diff = (got.logits - expected)[real].abs().max().item()
    assert diff <= 1e-4, diff


def test_greedy_generation_matches(converted: Any) -> None:
    _, _, hf, ours = converted
    ids, mask = padded_batch(seed=1, length=10)
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        hf_out = hf.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=32,
            do_sample=False,
            pad_token_id=0,
        )
    prompts = [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]
    ours_out = generate(ours, prompts, SamplingConfig(temperature=0, max_new_tokens=32))
    assert [len(t) for t in ours_out] == [32, 32]
    assert ours_out == hf_out[:, ids.shape[1] :].tolist()


def test_round_trip_is_bitwise(converted: Any) -> None:
    case, root, hf, _ = converted
    family = convert_to_hf(root / "ours", root / "back")
    assert family == EXPECTED_FAMILY.get(case, case)
    back = transformers.AutoModelForCausalLM.from_pretrained(root / "back")
    assert type(back) is type(hf)
    from safetensors import safe_open

    with (
        safe_open(str(root / "hf" / "model.safetensors"), "pt") as a,
        safe_open(str(root / "back" / "model.safetensors"), "pt") as b,
    ):
        assert set(a.keys()) == set(b.keys())
        for key in a.keys():  # noqa: SIM118
            x, y = a.get_tensor(key), b.get_tensor(key)
            assert x.dtype == y.dtype, key
            assert torch.equal(x, y), key

    original = transformers.AutoConfig.from_pretrained(root / "hf").to_dict()
    exported = transformers.AutoConfig.from_pretrained(root / "back").to_dict()
    for key in IGNORED_CONFIG_KEYS:
        original.pop(key, None)
        exported.pop(key, None)
    assert exported == original
    written = json.loads((root / "back" / "config.json").read_text())
    assert written["model_type"] == family
    assert Path(root / "back" / "generation_config.json").is_file()
