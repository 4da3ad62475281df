"""LoRA: starts as the base model, trains only adapters, merges into an equal plain model."""

import pytest
import torch

from tests.unit.models.conftest import tiny_config
from zmaj_lm.config.lora import LoRAConfig
from zmaj_lm.models import Transformer
from zmaj_lm.models.lora import LoRALinear, apply_lora, lora_state_dict, merge_lora

IDS = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(0))


def base_and_lora(**lora: object) -> tuple[Transformer, Transformer]:
    torch.manual_seed(0)
    base = Transformer(tiny_config())
    torch.manual_seed(0)
    adapted = Transformer(tiny_config())
    apply_lora(adapted, LoRAConfig.model_validate(lora))
    return base, adapted


def test_fresh_adapter_is_identity_and_only_adapters_train() -> None:
    base, adapted = base_and_lora(target_modules=["q_proj", "v_proj", "down_proj"])
    torch.testing.assert_close(adapted(IDS).logits, base(IDS).logits, atol=0, rtol=0)
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable == {
        f"layers.{i}.{m}.{ab}"
        for i in range(2)
        for m in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")
        for ab in ("lora_A", "lora_B")
    }
    assert set(lora_state_dict(adapted)) == trainable


def test_merged_model_equals_base_plus_adapter() -> None:
    _, adapted = base_and_lora(rank=4, alpha=8.0)
    with torch.no_grad():
        for p in adapted.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
    expected = adapted(IDS).logits
    q = adapted.layers[0].self_attn.q_proj
    assert isinstance(q, LoRALinear)
    torch.testing.assert_close(q.delta_weight(), (q.lora_B @ q.lora_A) * 2.0)
    assert merge_lora(adapted) == 8
    assert not any(isinstance(m, LoRALinear) for m in adapted.modules())
    torch.testing.assert_close(adapted(IDS).logits, expected, atol=1e-5, rtol=0)


def test_adapter_trains_and_base_stays_frozen() -> None:
    base, adapted = base_and_lora()
    opt = torch.optim.SGD([p for p in adapted.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        adapted(IDS).logits.logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad()
    base_state = base.state_dict()
    for name, value in adapted.state_dict().items():
        if "lora_" not in name:
            torch.testing.assert_close(value, base_state[name], atol=0, rtol=0)
    assert not torch.allclose(adapted(IDS).logits, base(IDS).logits)


def test_unknown_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="matched no linear layer"):
        apply_lora(Transformer(tiny_config()), LoRAConfig(target_modules=["c_attn"]))
