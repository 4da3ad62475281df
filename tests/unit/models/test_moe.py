"""The batched mixture of experts computes exactly what the reference loop computes."""

import pytest
import torch

from tests.unit.models.conftest import tiny_config
from zmaj_lm.models.moe import MoE


def build(implementation: str, shared: bool = False, top_k: int = 2) -> MoE:
    cfg = tiny_config(
        moe={
            "n_experts": 5,
            "top_k": top_k,
            "d_expert": 24,
            "shared_expert_d_ff": 40 if shared else None,
            "implementation": implementation,
        }
    )
    torch.manual_seed(0)
    moe = MoE(cfg)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return moe


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("top_k", [1, 2, 5])
def test_batched_equals_loop(shared: bool, top_k: int) -> None:
    loop, batched = build("loop", shared, top_k), build("batched", shared, top_k)
    x = torch.randn(3, 17, 64, generator=torch.Generator().manual_seed(1))
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out1, losses1 = loop(x1)
    out2, losses2 = batched(x2)
    torch.testing.assert_close(out1, out2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(losses1.load_balancing, losses2.load_balancing)
    (out1.square().sum() + losses1.load_balancing).backward()
    (out2.square().sum() + losses2.load_balancing).backward()
    # Gradients accumulate the same terms in a different order: atol 1e-4 (values are ~1e-1).
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-4, rtol=1e-4)
    for p, q in zip(loop.parameters(), batched.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-4)


def test_balanced_router_loss_equals_top_k() -> None:
    """With a uniform router, E * sum_e f_e * P_e = E * E * (k/E) * (1/E) = k."""
    moe = build("batched", top_k=2)
    torch.nn.init.zeros_(moe.router.weight)
    logits = moe.router(torch.randn(1000, 64)).float()
    experts = torch.arange(1000)[:, None].remainder(5).repeat(1, 2)
    experts[:, 1] = (experts[:, 0] + 1) % 5
    losses = moe.router_losses(logits, experts, None)
    torch.testing.assert_close(losses.load_balancing, torch.tensor(2.0))
    torch.testing.assert_close(losses.z_loss, torch.tensor(5.0).log().square())


def test_padding_is_excluded_from_router_statistics() -> None:
    moe = build("batched")
    x = torch.randn(2, 10, 64)
    valid = torch.ones(2, 10, dtype=torch.bool)
    valid[1, 6:] = False
    _, with_pad = moe(x, valid)
    real = torch.cat([x[0], x[1, :6]])[None]
    _, without_pad = moe(real)
    torch.testing.assert_close(with_pad.load_balancing, without_pad.load_balancing)
    torch.testing.assert_close(with_pad.z_loss, without_pad.z_loss)


def test_top_k_weights_are_normalised() -> None:
    moe = build("loop", top_k=3)
    _, weights, experts = moe.route(torch.randn(7, 64))
    torch.testing.assert_close(weights.sum(-1), torch.ones(7))
    assert experts.shape == (7, 3)
    assert all(len(set(row.tolist())) == 3 for row in experts)
