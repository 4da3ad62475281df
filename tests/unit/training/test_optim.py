"""Optimizer parameter groups and that every optimizer reduces a loss."""

import pytest
import torch

from zmaj_lm.config.training import OptimizerConfig
from zmaj_lm.models.transformer import Transformer
from zmaj_lm.training.optim import build_optimizer, newton_schulz, param_groups, set_lr

from .conftest import make_batches, tiny_model_config


def names_by_group(model: torch.nn.Module, cfg: OptimizerConfig) -> dict[str, set[str]]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: {by_id[id(p)] for p in g["params"]} for g in param_groups(model, cfg)}


def test_adamw_no_decay_on_norms_biases_embeddings() -> None:
    model = Transformer(tiny_model_config(qkv_bias=True, tie_embeddings=False))
    groups = names_by_group(model, OptimizerConfig(weight_decay=0.1))
    assert "embed_tokens.weight" in groups["no_decay"]
    assert "norm.weight" in groups["no_decay"]
    assert "layers.0.self_attn.q_proj.bias" in groups["no_decay"]
    assert "layers.0.attn_norm.weight" in groups["no_decay"]
    assert "layers.0.mlp.down_proj.weight" in groups["decay"]
    assert "lm_head.weight" in groups["decay"]
    assert all(
        p.ndim >= 2
        for g in param_groups(model, OptimizerConfig())
        if g["name"] == "decay"
        for p in g["params"]
    )
    wd = {g["name"]: g["weight_decay"] for g in param_groups(model, OptimizerConfig())}
    assert wd == {"decay": 0.1, "no_decay": 0.0}
    total = sum(len(v) for v in groups.values())
    assert total == len(list(model.parameters()))


def test_decay_everything_when_asked() -> None:
    model = Transformer(tiny_model_config())
    groups = names_by_group(model, OptimizerConfig(decay_norms_biases_embeddings=True))
    assert set(groups) == {"decay"}


def test_tied_embedding_appears_once() -> None:
    model = Transformer(tiny_model_config(tie_embeddings=True))
    groups = param_groups(model, OptimizerConfig())
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert id(model.embed_tokens.weight) in ids


def test_muon_takes_block_matrices_only() -> None:
    model = Transformer(tiny_model_config(tie_embeddings=False))
    groups = names_by_group(model, OptimizerConfig(name="muon"))
    assert "layers.1.self_attn.o_proj.weight" in groups["muon"]
    assert all(n.startswith("layers.") and n.endswith("proj.weight") for n in groups["muon"])
    assert "lm_head.weight" in groups["decay"]
    assert "embed_tokens.weight" in groups["no_decay"]


def test_newton_schulz_orthogonalises() -> None:
    g = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    s = torch.linalg.svdvals(newton_schulz(g, 5))
    assert float(s.min()) > 0.5
    assert float(s.max()) < 1.3


@pytest.mark.parametrize("name", ["adamw", "lion", "muon"])
def test_optimizer_reduces_loss(name: str) -> None:
    torch.manual_seed(0)
    model = Transformer(tiny_model_config())
    lr = {"adamw": 1e-2, "lion": 1e-3, "muon": 1e-2}[name]
    opt = build_optimizer(model, OptimizerConfig(name=name, lr=lr, muon_lr=0.02))
    batch = make_batches(1)[0]

    def loss() -> torch.Tensor:
        logits = model(batch.input_ids, document_ids=batch.document_ids).logits
        return torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), batch.labels.flatten(), ignore_index=-100
        )

    first = float(loss().detach())
    for _ in range(20):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(loss().detach()) < first - 0.5


def test_set_lr_scales_every_group_peak() -> None:
    model = Transformer(tiny_model_config(tie_embeddings=False))
    opt = build_optimizer(model, OptimizerConfig(name="muon", lr=1e-3, muon_lr=0.02))
    set_lr(opt, 0.5)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([5e-4, 5e-4, 0.01])
