"""Optimizers and their parameter groups.

Parameter groups follow one rule by default: matrices that multiply activations decay; norm gains,
biases and embedding tables do not (decaying them pulls gains towards zero and shrinks the
embeddings of rare tokens). Every group carries ``peak_lr``; :func:`set_lr` writes
``peak_lr * multiplier`` into ``lr`` each step, so the schedule is a plain function and the
optimizer's ``state_dict`` alone restores it.

Muon (Jordan et al., 2024) orthogonalises the momentum of each 2-D weight inside the blocks with a
Newton-Schulz iteration; everything else (embeddings, LM head, norms, biases) is updated by AdamW
inside the same optimizer, so one ``state_dict`` holds the whole state.
"""

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from zmaj_lm.config.training import OptimizerConfig

ParamGroup = dict[str, Any]


def _embedding_params(model: nn.Module) -> set[int]:
    return {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.Embedding)
        for p in m.parameters(recurse=False)
    }


def param_groups(model: nn.Module, cfg: OptimizerConfig) -> list[ParamGroup]:
    """Split trainable parameters into named groups with their lr and weight decay.

    Groups: ``decay`` (2-D+ weights that are not embeddings), ``no_decay`` (1-D parameters and
    embeddings, unless ``decay_norms_biases_embeddings``); for Muon, ``muon`` takes the 2-D+
    weights inside ``layers`` and the rest split as for AdamW. Tied parameters appear once.
    """
    embeddings = _embedding_params(model)
    decay: list[Tensor] = []
    no_decay: list[Tensor] = []
    muon: list[Tensor] = []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        is_matrix = p.ndim >= 2 and id(p) not in embeddings
        in_blocks = ".layers." in f".{name}"
        if cfg.name == "muon" and is_matrix and in_blocks:
            muon.append(p)
        elif is_matrix or cfg.decay_norms_biases_embeddings:
            decay.append(p)
        else:
            no_decay.append(p)
    groups: list[ParamGroup] = []
    if muon:
        groups.append(
            {
                "name": "muon",
                "params": muon,
                "use_muon": True,
                "peak_lr": cfg.muon_lr,
                "lr": cfg.muon_lr,
                "weight_decay": cfg.weight_decay,
            }
        )
    for group_name, params, wd in (
        ("decay", decay, cfg.weight_decay),
        ("no_decay", no_decay, 0.0),
    ):
        if params:
            groups.append(
                {
                    "name": group_name,
                    "params": params,
                    "use_muon": False,
                    "peak_lr": cfg.lr,
                    "lr": cfg.lr,
                    "weight_decay": wd,
                }
            )
    return groups


def set_lr(optimizer: torch.optim.Optimizer, multiplier: float) -> None:
    """Set every group's lr to ``peak_lr * multiplier``."""
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * multiplier


class Lion(torch.optim.Optimizer):
    """Lion: ``p -= lr * (sign(b1 m + (1 - b1) g) + wd p)``, then ``m = b2 m + (1 - b2) g``."""

    def __init__(
        self,
        params: Iterable[ParamGroup],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                update = (m * beta1 + p.grad * (1 - beta1)).sign_()
                p.mul_(1 - lr * wd).add_(update, alpha=-lr)
                m.lerp_(p.grad, 1 - beta2)
        return loss


def newton_schulz(G: Tensor, steps: int) -> Tensor:  # noqa: N803
    """Approximately orthogonalise G (..., m, n): the quintic iteration of Muon.

    Returns a tensor of G's shape whose singular values are roughly in [0.7, 1.2]. Runs in bf16
    on CUDA (as the reference does) and fp32 elsewhere (CPU bf16 matmuls are slow without AMX).
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.to(torch.bfloat16 if G.is_cuda else torch.float32)
    transposed = G.size(-2) > G.size(-1)
    if transposed:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if transposed:
        X = X.mT
    result: Tensor = X.to(G.dtype)
    return result


def _full(t: Tensor) -> Tensor:
    """The whole tensor of a (possibly FSDP-sharded) DTensor."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def _like(full: Tensor, ref: Tensor) -> Tensor:
    """Shard ``full`` the way ``ref`` (a DTensor or plain tensor) is sharded."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(ref, DTensor):
        return distribute_tensor(full, ref.device_mesh, ref.placements)
    return full


class Muon(torch.optim.Optimizer):
    """Muon for groups with ``use_muon``; AdamW for the others (one state dict for both).

    Muon update of a weight W (m, n): ``buf = mu buf + g``; ``u = NS(g + mu buf)`` (Nesterov);
    ``W -= lr * (max(1, m / n) ** 0.5 * u + wd W)``.
    """

    def __init__(
        self,
        params: Iterable[ParamGroup],
        lr: float = 0.02,
        momentum: float = 0.95,
        ns_steps: int = 5,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "ns_steps": ns_steps,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "use_muon": False,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_group(group)
            else:
                self._adamw_group(group)
        return loss

    def _muon_group(self, group: ParamGroup) -> None:
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.mul_(mu).add_(p.grad)
            g = _full(p.grad.add(buf, alpha=mu))
            update = newton_schulz(g, group["ns_steps"])
            update = update * max(1.0, g.size(-2) / g.size(-1)) ** 0.5
            p.mul_(1 - lr * wd).add_(_like(update, p), alpha=-lr)

    def _adamw_group(self, group: ParamGroup) -> None:
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            t = float(state["step"])
            state["exp_avg"].lerp_(p.grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            denom = (state["exp_avg_sq"] / (1 - beta2**t)).sqrt_().add_(eps)
            p.mul_(1 - lr * wd).addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1**t))


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg`` over :func:`param_groups` of ``model``."""
    groups = param_groups(model, cfg)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "lion":
        return Lion(groups, lr=cfg.lr, betas=cfg.betas)
    return Muon(
        groups,
        lr=cfg.muon_lr,
        momentum=cfg.muon_momentum,
        ns_steps=cfg.muon_ns_steps,
        betas=cfg.betas,
        eps=cfg.eps,
    )
