"""Feed-forward blocks: plain (GELU, ReLU, ReLU²) and gated (SwiGLU, GeGLU)."""

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from zmaj_lm.config.model import ModelConfig

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "relu2": lambda x: F.relu(x).square(),
    "silu": F.silu,
}


class MLP(nn.Module):
    """``down(act(gate(x)) * up(x))`` when gated, else ``down(act(up(x)))``.

    Shape legend: B batch, T tokens, D d_model, F hidden width.
    """

    def __init__(self, config: ModelConfig, d_ff: int | None = None) -> None:
        super().__init__()
        d_ff = config.d_ff if d_ff is None else d_ff
        self.gated = config.gated
        if config.gated:
            self.gate_proj = nn.Linear(config.d_model, d_ff, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.d_model, d_ff, bias=config.mlp_bias)
        self.down_proj = nn.Linear(d_ff, config.d_model, bias=config.mlp_bias)
        self.act = ACTIVATIONS[config.activation]

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D)."""
        h = self.up_proj(x)  # (B, T, F)
        h = self.act(self.gate_proj(x)) * h if self.gated else self.act(h)
        out: Tensor = self.down_proj(h)
        return out
