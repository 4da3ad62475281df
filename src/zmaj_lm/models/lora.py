"""LoRA: frozen base weights plus a trainable low-rank update ``(alpha / r) · B A``.

:class:`LoRALinear` *is* an ``nn.Linear`` (same ``weight``/``bias`` names) with two extra
matrices ``lora_A`` (r, in) and ``lora_B`` (out, r), the names and shapes PEFT uses, so a model's
state dict keeps its base keys and an adapter exports to PEFT's layout by renaming alone. ``B``
starts at zero: the adapted model is exactly the base model until it trains.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zmaj_lm.config.lora import LoRAConfig


class LoRALinear(nn.Linear):
    """``y = x Wᵀ + b + (alpha / r) · dropout(x) Aᵀ Bᵀ``; x (..., in) -> (..., out)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        super().__init__(
            base.in_features,
            base.out_features,
            bias=base.bias is not None,
            device="meta",
        )
        self.weight = base.weight
        self.bias = base.bias
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        self.dropout = dropout
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=5**0.5)  # PEFT's default for A

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight, self.bias)
        h = F.dropout(x, self.dropout, self.training)
        return out + F.linear(F.linear(h, self.lora_A), self.lora_B) * self.scaling

    def delta_weight(self) -> Tensor:
        """The update (out, in) that merging adds to ``weight``."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same function (weight + update)."""
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        with torch.no_grad():
            linear.weight.copy_(self.weight + self.delta_weight())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear


def apply_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Wrap every ``nn.Linear`` whose name ends in a target with :class:`LoRALinear`, freeze
    everything else, and return the wrapped modules' names. Raises if nothing matched."""
    targets = set(config.target_modules)
    wrapped: list[str] = []
    for name, module in list(model.named_modules()):
        leaf = name.rpartition(".")[2]
        if leaf in targets and type(module) is nn.Linear:
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            setattr(parent, leaf, LoRALinear(module, config.rank, config.alpha, config.dropout))
            wrapped.append(name)
    if not wrapped:
        raise ValueError(f"LoRA target_modules {sorted(targets)} matched no linear layer")
    for name, param in model.named_parameters():
        param.requires_grad = ".lora_A" in name or ".lora_B" in name
    return wrapped


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Only the adapter tensors (``<module>.lora_A`` / ``<module>.lora_B``), detached."""
    return {
        k: v.detach() for k, v in model.state_dict().items() if k.endswith((".lora_A", ".lora_B"))
    }


def merge_lora(model: nn.Module) -> int:
    """Replace every :class:`LoRALinear` by its merged ``nn.Linear``; return how many."""
    count = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, _, leaf = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, leaf, module.merged())
            count += 1
    for param in model.parameters():
        param.requires_grad = True
    return count
