"""Our DPO, IPO and GRPO losses equal TRL's on the same tensors; SimPO equals the paper's formula.

TRL embeds its losses in trainer methods (``DPOTrainer._compute_loss``,
``GRPOTrainer._compute_loss``); we call them unbound with a stub ``self`` carrying exactly the
attributes they read, and a fake model returning the per-token log-probs we chose. Values and
gradients are compared in fp64-free fp32 at 1e-6.
"""

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from zmaj_lm.posttrain.objectives import grpo_token_losses, preference_losses, reduce_grpo

P, T = 5, 9


class _Accelerator:
    device = torch.device("cpu")
    num_processes = 1
    sync_gradients = True

    def gather(self, t: Tensor) -> Tensor:
        return t

    gather_for_metrics = gather

    def reduce(self, t: Tensor, reduction: str = "sum") -> Tensor:
        return t


def _masks(generator: torch.Generator) -> Tensor:
    """(2P, T) completion masks: a prompt of 2-4 tokens, then 1..rest completion tokens."""
    mask = torch.zeros(2 * P, T, dtype=torch.long)
    for i in range(2 * P):
        start = int(torch.randint(2, 5, (1,), generator=generator))
        end = int(torch.randint(start + 1, T + 1, (1,), generator=generator))
        mask[i, start:end] = 1
    return mask


def _trl_dpo_loss(
    per_token: Tensor, mask: Tensor, ref: Tensor, loss_type: str, beta: float
) -> Tensor:
    from trl.trainer.dpo_trainer import DPOTrainer

    shift = mask[:, 1:]
    outputs = SimpleNamespace(
        log_probs=per_token * shift,
        entropy=torch.zeros_like(per_token),
        mean_logits=torch.zeros_like(per_token),
        is_top1=torch.zeros_like(shift, dtype=torch.bool),
    )
    stub = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_Accelerator(),
        precompute_ref_logps=True,
        ld_alpha=None,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        use_weighting=False,
        aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(2 * P, T, dtype=torch.long),
        "attention_mask": torch.ones(2 * P, T, dtype=torch.long),
        "completion_mask": mask,
        "ref_chosen_logps": ref[:P],
        "ref_rejected_logps": ref[P:],
    }
    loss: Tensor = DPOTrainer._compute_loss(stub, lambda **kw: outputs, inputs, False)  # type: ignore[arg-type]
    return loss


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_preference_loss_matches_trl(loss_type: str, beta: float) -> None:
    g = torch.Generator().manual_seed(0)
    mask = _masks(g)
    base = -torch.rand(2 * P, T - 1, generator=g) * 3
    ref = -torch.rand(2 * P, generator=g) * 10

    ours_in = base.clone().requires_grad_(True)
    shift = mask[:, 1:].float()
    logps = (ours_in * shift).sum(dim=1)
    lengths = shift.sum(dim=1)
    losses, _, _ = preference_losses(
        logps[:P],
        logps[P:],
        ref[:P],
        ref[P:],
        loss=loss_type,  # type: ignore[arg-type]
        beta=beta,
        chosen_len=lengths[:P],
        rejected_len=lengths[P:],
    )
    ours = losses.mean()
    ours.backward()

    trl_in = base.clone().requires_grad_(True)
    theirs = _trl_dpo_loss(trl_in, mask, ref, loss_type, beta)
    theirs.backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours_in.grad, trl_in.grad, rtol=1e-6, atol=1e-7)
    assert ours.item() > 0


def test_simpo_matches_paper_formula() -> None:
    """SimPO (Meng et al. 2024, eq. 6): -log σ(β/|y_w| log π(y_w|x) - β/|y_l| log π(y_l|x) - γ).

    Our ``simpo_gamma`` is the paper's γ/β ratio times β, i.e. the margin subtracted after the
    β scaling (the reference implementation's ``gamma_beta_ratio * beta``)."""
    g = torch.Generator().manual_seed(1)
    chosen, rejected = -torch.rand(P, generator=g) * 20, -torch.rand(P, generator=g) * 20
    c_len, r_len = (
        torch.randint(1, 9, (P,), generator=g).float(),
        torch.randint(1, 9, (P,), generator=g).float(),
    )
    beta, gamma = 2.0, 0.5
    losses, chosen_r, rejected_r = preference_losses(
        chosen,
        rejected,
        torch.zeros(P),
        torch.zeros(P),
        loss="simpo",
        beta=beta,
        chosen_len=c_len,
        rejected_len=r_len,
        simpo_gamma=gamma,
    )
    expected = -F.logsigmoid(beta * chosen / c_len - beta * rejected / r_len - gamma)
    torch.testing.assert_close(losses, expected)
    torch.testing.assert_close(chosen_r - rejected_r, beta * (chosen / c_len - rejected / r_len))


def _trl_grpo_loss(
    logps: Tensor,
    old: Tensor | None,
    ref: Tensor,
    adv: Tensor,
    mask: Tensor,
    loss_type: str,
    beta: float,
    eps: float,
    eps_high: float,
    max_len: int,
) -> Tensor:
    from trl.trainer.grpo_trainer import GRPOTrainer

    N, L = logps.shape
    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        loss_type=loss_type,
        epsilon_low=eps,
        epsilon_high=eps_high,
        use_vllm=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        max_completion_length=max_len,
        accelerator=_Accelerator(),
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    )
    inputs: dict[str, Any] = {
        "prompt_ids": torch.zeros(N, 3, dtype=torch.long),
        "prompt_mask": torch.ones(N, 3, dtype=torch.long),
        "completion_ids": torch.zeros(N, L, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    if old is not None:
        inputs["old_per_token_logps"] = old
    loss: Tensor = GRPOTrainer._compute_loss(stub, None, inputs)  # type: ignore[arg-type]
    return loss


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("moved", [False, True])
def test_grpo_loss_matches_trl(loss_type: str, moved: bool) -> None:
    """Same loss and gradient as TRL, on-policy (ratio 1) and after the policy moved (ratios
    beyond the clip range on both sides)."""
    g = torch.Generator().manual_seed(2)
    N, L, max_len = 8, 6, 6
    base = -torch.rand(N, L, generator=g) * 2
    old = (base + torch.randn(N, L, generator=g) * 0.5) if moved else None
    ref = base + torch.randn(N, L, generator=g) * 0.3
    adv = torch.randn(N, generator=g)
    lengths = torch.randint(1, L + 1, (N,), generator=g)
    mask = (torch.arange(L)[None] < lengths[:, None]).long()
    beta, eps, eps_high = 0.04, 0.2, 0.28

    ours_in = base.clone().requires_grad_(True)
    old_ours = old if old is not None else ours_in.detach()
    loss, _, clipped = grpo_token_losses(
        ours_in, old_ours, ref, adv, beta=beta, epsilon_low=eps, epsilon_high=eps_high
    )
    total, units = reduce_grpo(loss, mask.bool(), loss_type, max_len)  # type: ignore[arg-type]
    ours = total / units
    ours.backward()

    trl_in = base.clone().requires_grad_(True)
    theirs = _trl_grpo_loss(trl_in, old, ref, adv, mask, loss_type, beta, eps, eps_high, max_len)
    theirs.backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours_in.grad, trl_in.grad, rtol=1e-6, atol=1e-7)
    assert bool(clipped.any()) == moved
