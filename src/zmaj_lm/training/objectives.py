"""Objectives: what a training stage minimises.

An objective turns ``(model, batch)`` into a *sum* of per-unit losses, the number of units it
summed over, and extra metrics. The fit loop adds the sums of every micro-batch (and every rank)
and divides by the total units of the optimizer step, so gradients do not depend on how the step
is split into micro-batches (the TRL #2604 bug: averaging per micro-batch weights short
micro-batches more). Pretraining and SFT count supervised tokens; DPO will count preference pairs
and GRPO completions or tokens: each objective says what a unit is in :meth:`Objective.count`.
"""

from dataclasses import dataclass, field
from typing import Protocol

from torch import Tensor, nn

from zmaj_lm.data.batch import Batch
from zmaj_lm.eval.losses import token_losses


@dataclass
class ObjectiveOutput:
    """``loss_sum`` scalar fp32 summed over ``n_units``; ``metrics`` are sums over the same units
    (the loop divides them by the step's total units before logging)."""

    loss_sum: Tensor
    n_units: int
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Objective(Protocol):
    """What a stage minimises; the only thing that differs between stages of the fit loop."""

    name: str

    def count(self, batch: Batch) -> int:
        """Units (e.g. supervised tokens) the loss of ``batch`` is summed over, known before the
        forward pass so the step's normaliser can be agreed on first."""
        ...

    def __call__(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        """Forward ``batch`` through ``model`` and return the summed loss."""
        ...


class PretrainObjective:
    """Next-token cross-entropy summed over supervised tokens, plus the MoE router loss."""

    name = "pretrain"

    def count(self, batch: Batch) -> int:
        return batch.num_tokens

    def __call__(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        losses, aux = token_losses(model, batch)
        n = self.count(batch)
        ce_sum = losses.sum()
        metrics = {"ce_loss": ce_sum.detach()}
        loss_sum = ce_sum
        if aux.requires_grad:
            loss_sum = ce_sum + aux * n
            metrics["aux_loss"] = (aux * n).detach()
        return ObjectiveOutput(loss_sum=loss_sum, n_units=n, metrics=metrics)


def build_objective(name: str) -> Objective:
    """The objective registered under ``name``."""
    if name == "pretrain":
        return PretrainObjective()
    raise ValueError(f"unknown objective {name!r}")


__all__ = [
    "Objective",
    "ObjectiveOutput",
    "PretrainObjective",
    "build_objective",
    "token_losses",
]
