"""Normalisation layers: LayerNorm (with or without bias) and RMSNorm (plain or ``1 + w``)."""

import torch
from torch import Tensor, nn

from zmaj_lm.config.model import ModelConfig


class RMSNorm(nn.Module):
    """``x / rms(x) * w`` computed in fp32, as Llama does; ``unit_offset`` scales by ``1 + w``.

    Gemma stores ``w`` around zero and multiplies by ``(1 + w)``; keeping that form (instead of
    folding the 1 into the weight) lets its checkpoints load unchanged.
    """

    def __init__(self, dim: int, eps: float, unit_offset: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.unit_offset = unit_offset
        self.weight = nn.Parameter(torch.zeros(dim) if unit_offset else torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """(..., dim) -> (..., dim)"""
        dtype = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.unit_offset:
            return (xf * (1.0 + self.weight.float())).to(dtype)
        return self.weight * xf.to(dtype)

    def reset_parameters(self) -> None:
        """Identity at initialisation: w = 0 in the ``1 + w`` form, else w = 1."""
        if self.unit_offset:
            nn.init.zeros_(self.weight)
        else:
            nn.init.ones_(self.weight)


def build_norm(config: ModelConfig, dim: int | None = None) -> nn.Module:
    """The model's normalisation layer over ``dim`` features (default ``d_model``)."""
    dim = config.d_model if dim is None else dim
    if config.norm == "layernorm":
        return nn.LayerNorm(dim, eps=config.norm_eps, bias=config.norm_bias)
    return RMSNorm(dim, eps=config.norm_eps, unit_offset=config.norm_unit_offset)
