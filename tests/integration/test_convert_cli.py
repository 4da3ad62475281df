"""scripts/convert.py end to end: verify reports, sharding, pickles, bad input, dtype, training.

The script's ``main`` runs in-process (transformers is imported once per test session); one test
runs it as a subprocess to check that bad input gives one stderr line, status 2, no traceback.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.unit.interop.tiny_hf import padded_batch, save_hf_model, save_tokenizer
from zmaj_lm.config.model import ModelConfig
from zmaj_lm.interop import convert_from_hf, convert_to_hf
from zmaj_lm.interop.chat_template import apply_chat_template
from zmaj_lm.interop.spec import ConversionError
from zmaj_lm.interop.verify import verify_conversion
from zmaj_lm.models.io import load_model, save_model
from zmaj_lm.models.transformer import Transformer

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("convert_script", ROOT / "scripts" / "convert.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script() -> ModuleType:
    """The script module, with its logging set-up disabled (it would add a loguru sink on
    pytest's captured stderr, which is closed after the test)."""
    module = _script()
    module.setup_logging = lambda *args, **kwargs: None
    return module


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("llama")
    save_hf_model("llama3", root)
    save_tokenizer(root)
    return root


def _logits(model: Any, hf: bool) -> torch.Tensor:
    ids, mask = padded_batch()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        if hf:
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        else:
            docs = torch.where(mask.bool(), 0, -1)
            out = model(ids, position_ids=positions, document_ids=docs).logits
    return out[mask.bool()]


def test_from_hf_verify_writes_report_and_carries_tokenizer(
    script: ModuleType, llama_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ours"
    assert script.main(["from-hf", str(llama_dir), str(out), "--verify"]) == 0
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["passed"] is True
    assert report["max_abs_logit_diff"] <= 1e-4
    assert report["first_diverging"] is None
    assert report["family"] == "llama"
    assert set(report["layer_max_abs_diff"]) == {"embeddings", "layer 0", "layer 1 (+ final norm)"}
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["n_layers"] == 2
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (out / name).is_file(), name
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_config["chat_template"] == (llama_dir / "chat_template.jinja").read_text()
    messages = [{"role": "user", "content": "w1 w2"}]
    tok = transformers.AutoTokenizer.from_pretrained(llama_dir)
    expected = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert apply_chat_template(out, messages, add_generation_prompt=True) == expected

    back = tmp_path / "back"
    assert script.main(["to-hf", str(out), str(back), "--verify"]) == 0
    assert json.loads((back / "conversion_report.json").read_text())["passed"] is True
    reloaded = transformers.AutoTokenizer.from_pretrained(back)
    assert reloaded.apply_chat_template(messages, tokenize=False) == tok.apply_chat_template(
        messages, tokenize=False
    )
    generation = json.loads((back / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2


def test_failed_verify_names_first_diverging_layer(
    script: ModuleType, llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mapping bug (layer 1's o_proj scaled) fails the command and is located by layer."""
    import zmaj_lm.interop.convert as convert_module

    real_import = convert_module.import_state

    def buggy(*args: Any, **kwargs: Any) -> Any:
        result = real_import(*args, **kwargs)
        result.state["layers.1.self_attn.o_proj.weight"] *= 1.5
        return result

    monkeypatch.setattr(convert_module, "import_state", buggy)
    out = tmp_path / "ours"
    assert script.main(["from-hf", str(llama_dir), str(out), "--verify"]) == 1
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["passed"] is False
    assert report["first_diverging"] == "layer 1 (+ final norm)"
    assert report["layer_max_abs_diff"]["layer 0"] <= 1e-4


def test_sharded_input_and_output(tmp_path: Path) -> None:
    hf = save_hf_model("qwen3_moe", tmp_path / "hf", max_shard_size="30KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    convert_from_hf(tmp_path / "hf", tmp_path / "ours")
    ours = load_model(tmp_path / "ours").eval()
    assert (_logits(ours, False) - _logits(hf, True)).abs().max() <= 1e-4

    convert_to_hf(tmp_path / "ours", tmp_path / "back", max_shard_bytes=40_000)
    index = json.loads((tmp_path / "back" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2
    for shard in shards:
        assert (tmp_path / "back" / shard).stat().st_size < 40_000 + 4096
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back")
    for key, tensor in hf.state_dict().items():
        assert torch.equal(back.state_dict()[key], tensor), key


def test_pickle_refused_without_flag_and_loaded_safely_with_it(
    script: ModuleType, llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "bin"
    src.mkdir()
    (src / "config.json").write_text((llama_dir / "config.json").read_text())
    torch.save(load_file(str(llama_dir / "model.safetensors")), src / "pytorch_model.bin")
    assert script.main(["from-hf", str(src), str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "--allow-pickle" in err
    assert "Traceback" not in err
    assert not (tmp_path / "a").exists()
    assert script.main(["from-hf", str(src), str(tmp_path / "b"), "--allow-pickle"]) == 0
    a = load_file(str(tmp_path / "b" / "model.safetensors"))
    convert_from_hf(llama_dir, tmp_path / "c")
    b = load_file(str(tmp_path / "c" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _tampered_copy(llama_dir: Path, dest: Path, edit: Any) -> Path:
    dest.mkdir()
    (dest / "config.json").write_text((llama_dir / "config.json").read_text())
    state = load_file(str(llama_dir / "model.safetensors"))
    edit(state)
    save_file(state, str(dest / "model.safetensors"))
    return dest


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda s: s.update({"model.layers.0.mlp.extra.weight": torch.zeros(2)}),
            "unexpected tensor (no mapping rule): model.layers.0.mlp.extra.weight",
        ),
        (
            lambda s: s.pop("model.layers.1.mlp.up_proj.weight"),
            "missing tensor (our model needs it): layers.1.mlp.up_proj.weight",
        ),
        (
            lambda s: s.update({"model.layers.0.self_attn.k_proj.weight": torch.zeros(64, 64)}),
            "model.layers.0.self_attn.k_proj.weight: shape (64, 64) but "
            "layers.0.self_attn.k_proj.weight needs (32, 64)",
        ),
        (
            lambda s: s.update({"model.layers.0.self_attn.q_proj.bias": torch.zeros(64)}),
            "model.layers.0.self_attn.q_proj.bias: maps to layers.0.self_attn.q_proj.bias, "
            "which this model config does not have",
        ),
    ],
    ids=["unexpected", "missing", "misshaped", "not-in-config"],
)
def test_bad_tensors_are_listed(llama_dir: Path, tmp_path: Path, edit: Any, expected: str) -> None:
    src = _tampered_copy(llama_dir, tmp_path / "src", edit)
    with pytest.raises(ConversionError) as info:
        convert_from_hf(src, tmp_path / "out")
    assert expected in info.value.problems
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_bad_input_exits_2_without_traceback(llama_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    config = json.loads((llama_dir / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(config | {"model_type": "bert"}))
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "convert.py"),
            "from-hf",
            str(src),
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: {src / 'config.json'}: model_type: 'bert' is not supported "
        "(supported: llama, mistral, qwen2, qwen3, qwen3_moe, gemma, olmo2, gpt2)"
    ]


def test_hub_id_offline_fails_clearly(script: ModuleType, tmp_path: Path, capsys: Any) -> None:
    assert script.main(["from-hf", "no-such-org/no-such-model", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no-such-org/no-such-model: download failed")


def test_feature_without_hf_family_is_refused(
    script: ModuleType, tmp_path: Path, capsys: Any
) -> None:
    config = ModelConfig(
        vocab_size=128,
        d_model=64,
        n_layers=2,
        n_heads=4,
        d_ff=96,
        max_seq_len=64,
        attn_logit_softcap=30.0,
    )
    save_model(Transformer(config), tmp_path / "ckpt")
    assert script.main(["to-hf", str(tmp_path / "ckpt"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "attn_logit_softcap=30.0" in err
    assert not (tmp_path / "o").exists()
    assert (
        script.main(["to-hf", str(tmp_path / "ckpt"), str(tmp_path / "o"), "--family", "gemma"])
        == 2
    )
    assert "cannot export as gemma" in capsys.readouterr().err


def test_model_trained_from_scratch_exports_as_llama(script: ModuleType, tmp_path: Path) -> None:
    """A Llama-compatible config with no HF provenance: family chosen from its features."""
    config = ModelConfig.model_validate(
        yaml.safe_load((ROOT / "configs" / "models" / "llama-1b.yaml").read_text())["model"]
        | {
            "vocab_size": 256,
            "d_model": 64,
            "n_layers": 2,
            "n_heads": 4,
            "n_kv_heads": 2,
            "head_dim": 16,
            "d_ff": 128,
        }
    )
    torch.manual_seed(0)
    save_model(Transformer(config), tmp_path / "ckpt")
    save_tokenizer(tmp_path / "ckpt", vocab_size=256)
    assert script.main(["to-hf", str(tmp_path / "ckpt"), str(tmp_path / "hf"), "--verify"]) == 0
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["model_type"] == "llama"
    assert hf_config["rope_parameters"]["rope_type"] == "llama3"
    assert hf_config["tie_word_embeddings"] is True
    assert (hf_config["bos_token_id"], hf_config["eos_token_id"]) == (1, 2)


def test_bf16_is_preserved(tmp_path: Path) -> None:
    model = save_hf_model("qwen2", tmp_path / "tmp")
    model.to(torch.bfloat16).save_pretrained(tmp_path / "hf")
    convert_from_hf(tmp_path / "hf", tmp_path / "ours")
    with safe_open(str(tmp_path / "ours" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # noqa: SIM118
    assert load_model(tmp_path / "ours").embed_tokens.weight.dtype == torch.bfloat16
    convert_to_hf(tmp_path / "ours", tmp_path / "back")
    assert json.loads((tmp_path / "back" / "config.json").read_text())["dtype"] == "bfloat16"
    a = load_file(str(tmp_path / "hf" / "model.safetensors"))
    b = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert all(b[k].dtype == torch.bfloat16 and torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_converted_checkpoint_fine_tunes_and_exports(llama_dir: Path, tmp_path: Path) -> None:
    convert_from_hf(llama_dir, tmp_path / "ours")
    model = load_model(tmp_path / "ours")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(3, 128, (4, 17), generator=gen)
    losses = []
    for _ in range(8):
        logits = model(batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 128), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
    save_model(model, tmp_path / "tuned")
    convert_to_hf(tmp_path / "tuned", tmp_path / "hf")
    assert verify_conversion(tmp_path / "tuned", tmp_path / "hf").passed


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_hub_download_asks_only_for_needed_files(
    llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allow_pickle: bool
) -> None:
    import huggingface_hub

    calls: list[dict[str, Any]] = []

    def fake_snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        return str(llama_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    convert_from_hf("org/model", tmp_path / "o", revision="main", allow_pickle=allow_pickle)
    (call,) = calls
    assert call["repo_id"] == "org/model"
    assert call["revision"] == "main"
    patterns = call["allow_patterns"]
    assert "model.safetensors" in patterns
    assert "tokenizer.json" in patterns
    assert ("pytorch_model.bin" in patterns) == allow_pickle
    assert "*" not in patterns
    source = json.loads((tmp_path / "o" / "hf_source.json").read_text())
    assert source["repo_id"] == "org/model"


def test_corrupt_weights_file_is_one_clear_error(
    script: ModuleType, llama_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text((llama_dir / "config.json").read_text())
    (src / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert script.main(["from-hf", str(src), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {src / 'model.safetensors'}: unreadable:")
    assert "Traceback" not in err
