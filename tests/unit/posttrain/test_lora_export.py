"""LoRA after post-training: merged weights equal base plus adapter; the adapter in PEFT's layout
loads with ``peft.PeftModel.from_pretrained`` onto the exported HF model and gives our logits."""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from zmaj_lm.config.lora import LoRAConfig
from zmaj_lm.data.tokenizer import Tokenizer
from zmaj_lm.interop.convert import convert_to_hf
from zmaj_lm.models.io import load_model, save_model
from zmaj_lm.models.lora import LoRALinear, apply_lora
from zmaj_lm.models.transformer import Transformer
from zmaj_lm.posttrain.chat import BUILTIN_TEMPLATE, ChatFormat
from zmaj_lm.posttrain.export import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from zmaj_lm.posttrain.train import Init, finish

from .conftest import tiny_model

LORA = LoRAConfig(rank=4, alpha=8.0, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])


def _trained_lora(seed: int = 0) -> Transformer:
    """A tiny model with adapters whose B is non-zero (as after training)."""
    model = tiny_model(seed=seed)
    apply_lora(model, LORA)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.2)
    return model.eval()


def _ids() -> torch.Tensor:
    return torch.randint(0, 264, (2, 11), generator=torch.Generator().manual_seed(5))


def test_merged_model_equals_base_plus_adapter(tmp_path: Path, tokenizer: Tokenizer) -> None:
    model = _trained_lora()
    ids = _ids()
    with torch.no_grad():
        expected = model(ids).logits
    q = model.layers[0].self_attn.q_proj
    assert isinstance(q, LoRALinear)
    manual = q.weight + (q.lora_B @ q.lora_A) * (LORA.alpha / LORA.rank)
    init_dir = tmp_path / "init"
    save_model(tiny_model(), init_dir)
    tokenizer.save(init_dir / "tokenizer")
    init = Init(init_dir, model, tokenizer, init_dir / "tokenizer")
    paths = finish(
        model, init, tmp_path / "out", LORA, export_hf=True, chat_template=BUILTIN_TEMPLATE
    )
    merged = load_model(paths["model"]).eval()
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    torch.testing.assert_close(merged.layers[0].self_attn.q_proj.weight, manual.detach())
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, expected, rtol=1e-5, atol=1e-5)
    assert (Path(paths["model"]) / "tokenizer" / "tokenizer.json").is_file()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(paths["hf"])
    messages = [{"role": "user", "content": "1+2="}, {"role": "assistant", "content": "3"}]
    chat = ChatFormat(tokenizer, BUILTIN_TEMPLATE)
    assert hf_tok.apply_chat_template(messages, tokenize=False) == chat.render(messages)
    hf = AutoModelForCausalLM.from_pretrained(paths["hf"], dtype=torch.float32).eval()
    assert hf.config.eos_token_id == tokenizer.eos_id
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, expected, rtol=1e-4, atol=1e-4)


def test_peft_loads_adapter_with_our_logits(tmp_path: Path, tokenizer: Tokenizer) -> None:
    import peft
    from transformers import AutoModelForCausalLM

    base = tiny_model(seed=0)
    base_dir = tmp_path / "base"
    save_model(base, base_dir)
    tokenizer.save(base_dir)
    convert_to_hf(base_dir, tmp_path / "base_hf")

    model = _trained_lora(seed=0)
    init = Init(base_dir, model, tokenizer, base_dir)
    ids = _ids()
    with torch.no_grad():
        ours = model(ids).logits
    paths = finish(model, init, tmp_path / "out", LORA, export_hf=True)

    adapter_dir = Path(paths["adapter"])
    keys = set(load_file(str(adapter_dir / ADAPTER_WEIGHTS)))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in keys
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    assert config["target_modules"] == ["down_proj", "o_proj", "q_proj", "v_proj"]

    hf_base = AutoModelForCausalLM.from_pretrained(tmp_path / "base_hf", dtype=torch.float32)
    with torch.no_grad():
        plain = hf_base(ids).logits
    peft_model = peft.PeftModel.from_pretrained(hf_base, adapter_dir).eval()
    with torch.no_grad():
        theirs = peft_model(ids).logits
    assert (theirs - plain).abs().max() > 1e-3
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)

    merged_hf = AutoModelForCausalLM.from_pretrained(paths["hf"], dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged_hf(ids).logits, ours, rtol=1e-4, atol=1e-4)
