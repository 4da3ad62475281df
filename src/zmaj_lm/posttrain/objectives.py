"""SFT, DPO and GRPO as objectives of the one fit loop.

Each objective returns a *sum* of per-unit losses and its unit count (see
:mod:`zmaj_lm.training.objectives`), so the loop's step gradient does not depend on how a step is
split into micro-batches:

* SFT: unit = supervised (assistant) token; the loss is next-token cross-entropy.
* DPO: unit = preference pair; every pair's loss depends on that pair alone.
* GRPO: unit = completion token (``dapo``: mean over all completion tokens of the step) or
  completion (``grpo``: each completion's token mean; ``dr_grpo``: each completion's token sum
  over ``max_completion_len``).

The loss formulas are plain tensor functions (:func:`preference_losses`,
:func:`grpo_token_losses`), checked against TRL's implementations in the tests.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zmaj_lm.data.batch import Batch
from zmaj_lm.posttrain.batches import PreferenceBatch, RolloutBatch, forward_logps
from zmaj_lm.training.objectives import ObjectiveOutput, PretrainObjective

PreferenceLoss = Literal["sigmoid", "ipo", "simpo"]
GRPOLoss = Literal["grpo", "dr_grpo", "dapo"]


class SFTObjective(PretrainObjective):
    """Cross-entropy summed over assistant tokens (the labels mark nothing else)."""

    name = "sft"


def preference_losses(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    loss: PreferenceLoss,
    beta: float,
    chosen_len: Tensor | None = None,
    rejected_len: Tensor | None = None,
    label_smoothing: float = 0.0,
    simpo_gamma: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-pair losses (P,), chosen rewards (P,), rejected rewards (P,); inputs (P,) fp32.

    ``*_logps`` are summed completion log-probs. ``sigmoid``: ``-log σ(β Δ)`` (with conservative
    label smoothing ε: ``-(1-ε) log σ(βΔ) - ε log σ(-βΔ)``), Δ the difference of policy/reference
    log-ratios; ``ipo``: ``(Δ - 1/(2β))²`` with Δ on length-normalised log-probs (as TRL);
    ``simpo``: ``-log σ(β (c/|c| - r/|r|) - γ)`` (reference-free, length-normalised). Rewards are
    ``β · log-ratio`` (SimPO: ``β ·`` length-normalised log-prob), detached.
    """
    if loss in ("ipo", "simpo"):
        if chosen_len is None or rejected_len is None:
            raise ValueError(f"{loss} needs completion lengths")
        c_len, r_len = chosen_len.clamp(min=1), rejected_len.clamp(min=1)
        chosen_logps, rejected_logps = chosen_logps / c_len, rejected_logps / r_len
        ref_chosen_logps, ref_rejected_logps = ref_chosen_logps / c_len, ref_rejected_logps / r_len
    if loss == "simpo":
        logits = chosen_logps - rejected_logps
        losses = -F.logsigmoid(beta * logits - simpo_gamma)
        return losses, (beta * chosen_logps).detach(), (beta * rejected_logps).detach()
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    logits = chosen_ratio - rejected_ratio
    if loss == "sigmoid":
        losses = (
            -F.logsigmoid(beta * logits) * (1 - label_smoothing)
            - F.logsigmoid(-beta * logits) * label_smoothing
        )
    elif loss == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown preference loss {loss!r}")
    return losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach()


class DPOObjective:
    """DPO / IPO / SimPO over :class:`PreferenceBatch` rows; unit = preference pair.

    With ``rpo_alpha`` the per-token NLL of each pair's chosen completion is added (per pair, so
    the unit stays the pair; TRL's ``sft`` term averages tokens over the whole batch instead).
    """

    name = "dpo"

    def __init__(
        self,
        loss: PreferenceLoss = "sigmoid",
        beta: float = 0.1,
        label_smoothing: float = 0.0,
        simpo_gamma: float = 0.5,
        rpo_alpha: float = 0.0,
    ) -> None:
        self.loss, self.beta = loss, beta
        self.label_smoothing, self.simpo_gamma = label_smoothing, simpo_gamma
        self.rpo_alpha = rpo_alpha

    def count(self, batch: Batch) -> int:
        assert isinstance(batch, PreferenceBatch)
        return batch.num_pairs

    def __call__(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        assert isinstance(batch, PreferenceBatch)
        P = batch.num_pairs
        logps = forward_logps(model, batch).sum(dim=1)  # (2P,)
        lengths = batch.loss_mask.sum(dim=1).float()  # (2P,)
        ref = batch.ref_logps.float()
        losses, chosen_r, rejected_r = preference_losses(
            logps[:P],
            logps[P:],
            ref[:P],
            ref[P:],
            loss=self.loss,
            beta=self.beta,
            chosen_len=lengths[:P],
            rejected_len=lengths[P:],
            label_smoothing=self.label_smoothing,
            simpo_gamma=self.simpo_gamma,
        )
        margin = chosen_r - rejected_r
        metrics = {
            "reward_margin": margin.sum(),
            "pref_accuracy": (margin > 0).float().sum(),
            "chosen_reward": chosen_r.sum(),
            "rejected_reward": rejected_r.sum(),
            "chosen_logp": logps[:P].detach().sum(),
            "rejected_logp": logps[P:].detach().sum(),
        }
        if self.rpo_alpha > 0:
            nll = -logps[:P] / lengths[:P].clamp(min=1)
            losses = losses + self.rpo_alpha * nll
            metrics["chosen_nll"] = nll.detach().sum()
        return ObjectiveOutput(loss_sum=losses.sum(), n_units=P, metrics=metrics)


def grpo_token_losses(
    logps: Tensor,
    old_logps: Tensor,
    ref_logps: Tensor | None,
    advantages: Tensor,
    *,
    beta: float,
    epsilon_low: float,
    epsilon_high: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token clipped-surrogate loss (N, L), k3 KL (N, L) and clipped flags (N, L).

    ``loss = -min(ρ A, clip(ρ, 1-ε_low, 1+ε_high) A) + β KL`` with ``ρ = exp(logp - old)`` and
    ``KL = exp(ref - logp) - (ref - logp) - 1`` (Schulman's k3, unbiased and non-negative).
    ``advantages`` (N,) broadcast over tokens.
    """
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    adv = advantages[:, None]
    loss = -torch.min(ratio * adv, clipped * adv)
    if ref_logps is not None and beta != 0:
        diff = ref_logps - logps
        kl = torch.exp(diff) - diff - 1
        loss = loss + beta * kl
    else:
        kl = torch.zeros_like(loss)
    was_clipped = ((ratio < 1 - epsilon_low) & (adv < 0)) | ((ratio > 1 + epsilon_high) & (adv > 0))
    return loss, kl, was_clipped


def reduce_grpo(loss: Tensor, mask: Tensor, kind: GRPOLoss, max_len: int) -> tuple[Tensor, int]:
    """Sum of per-unit losses and the unit count for ``kind`` (see the module docstring)."""
    m = mask.float()
    if kind == "dapo":
        return (loss * m).sum(), int(mask.sum())
    per_seq = (loss * m).sum(dim=1)
    if kind == "grpo":
        return (per_seq / m.sum(dim=1).clamp(min=1)).sum(), int(mask.shape[0])
    if kind == "dr_grpo":
        return (per_seq / max_len).sum(), int(mask.shape[0])
    raise ValueError(f"unknown GRPO loss {kind!r}")


class GRPOObjective:
    """Clipped policy-gradient loss with group-normalised advantages and a k3 KL penalty."""

    name = "grpo"

    def __init__(
        self,
        loss_type: GRPOLoss = "dapo",
        beta: float = 0.04,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
    ) -> None:
        self.loss_type, self.beta = loss_type, beta
        self.epsilon_low = epsilon
        self.epsilon_high = epsilon_high if epsilon_high is not None else epsilon

    def count(self, batch: Batch) -> int:
        assert isinstance(batch, RolloutBatch)
        if self.loss_type == "dapo":
            return batch.num_tokens
        return int(batch.input_ids.shape[0])

    def __call__(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        assert isinstance(batch, RolloutBatch)
        logps = forward_logps(model, batch)  # (N, T)
        old = batch.old_logps if batch.has_old else logps.detach()
        ref = batch.ref_logps if self.beta != 0 else None
        loss, kl, was_clipped = grpo_token_losses(
            logps,
            old,
            ref,
            batch.advantages.float(),
            beta=self.beta,
            epsilon_low=self.epsilon_low,
            epsilon_high=self.epsilon_high,
        )
        mask = batch.loss_mask
        loss_sum, units = reduce_grpo(loss, mask, self.loss_type, batch.max_completion_len)
        tokens = max(int(mask.sum()), 1)
        m = mask.float()
        metrics = {
            "kl": (kl * m).sum().detach() / tokens * units,
            "clip_fraction": (was_clipped.float() * m).sum() / tokens * units,
        }
        return ObjectiveOutput(loss_sum=loss_sum, n_units=units, metrics=metrics)
