"""Position encodings: rotary (with linear, Llama-3 and YaRN scaling) and sinusoidal.

Rotary embeddings use the rotate-half layout of Llama/GPT-NeoX: the rotated part of a head is
split into two halves ``(x1, x2)`` that rotate as ``(x1 cos - x2 sin, x2 cos + x1 sin)``. Only the
first ``rotary_dim`` dimensions rotate (partial rotary); the rest pass through unchanged.
Frequencies, cos and sin are computed in fp32 and cast to the activation dtype at the end, as
transformers does, so converted checkpoints agree to rounding.
"""

import math

import torch
from torch import Tensor, nn

from zmaj_lm.config.model import (
    LinearRopeScaling,
    Llama3RopeScaling,
    ModelConfig,
    RopeConfig,
    YarnRopeScaling,
)


def rope_frequencies(rope: RopeConfig, rotary_dim: int) -> tuple[Tensor, float]:
    """Inverse frequencies (rotary_dim / 2,) fp32 and the multiplier applied to cos and sin."""
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim
    inv_freq = 1.0 / (rope.theta**exponents)
    scaling = rope.scaling
    if scaling is None:
        return inv_freq, 1.0
    if isinstance(scaling, LinearRopeScaling):
        return inv_freq / scaling.factor, 1.0
    if isinstance(scaling, Llama3RopeScaling):
        return _llama3_frequencies(inv_freq, scaling), 1.0
    return _yarn_frequencies(rope.theta, rotary_dim, scaling)


def _llama3_frequencies(inv_freq: Tensor, s: Llama3RopeScaling) -> Tensor:
    """Llama 3.1: keep high frequencies, divide low ones by ``factor``, blend in between."""
    low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def _yarn_frequencies(theta: float, dim: int, s: YarnRopeScaling) -> tuple[Tensor, float]:
    """YaRN NTK-by-parts: interpolate slow dimensions, extrapolate fast ones, ramp in between."""
    attention_factor = s.attention_factor
    if attention_factor is None:
        attention_factor = 0.1 * math.log(s.factor) + 1.0 if s.factor > 1 else 1.0

    def correction_dim(n_rotations: float) -> float:
        return (
            dim * math.log(s.original_max_position_embeddings / (n_rotations * 2 * math.pi))
        ) / (2 * math.log(theta))

    low, high = correction_dim(s.beta_fast), correction_dim(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # a zero-width ramp would divide by zero
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation_weight = 1 - ramp
    pos_freqs = theta ** (torch.arange(0, dim, 2).float() / dim)
    inv_freq_extrapolation = 1.0 / pos_freqs
    inv_freq_interpolation = 1.0 / (s.factor * pos_freqs)
    inv_freq = (
        inv_freq_interpolation * (1 - extrapolation_weight)
        + inv_freq_extrapolation * extrapolation_weight
    )
    return inv_freq, attention_factor


class RotaryEmbedding(nn.Module):
    """Computes cos/sin for arbitrary position ids; shared by every RoPE layer of a model."""

    inv_freq: Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.rope is not None
        self.rope = config.rope
        self.rotary_dim = config.rotary_dim
        inv_freq, self.attention_scaling = rope_frequencies(config.rope, self.rotary_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def reset_parameters(self) -> None:
        """Recompute the frequency buffer (needed after building on the meta device)."""
        inv_freq, _ = rope_frequencies(self.rope, self.rotary_dim)
        self.inv_freq.copy_(inv_freq)

    def forward(self, position_ids: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """position_ids (B, T) -> cos, sin (B, T, rotary_dim), in ``dtype``."""
        freqs = position_ids.float()[..., None] * self.inv_freq.float()  # (B, T, rd/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, rd)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype), sin.to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """(..., d) -> (..., d): ``(x1, x2) -> (-x2, x1)`` over the two halves of the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, H, T, hd), cos/sin (B, T, rd) -> (B, H, T, hd), rotating the first rd dims."""
    rd = cos.shape[-1]
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, rd)
    if rd == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    x_rot, x_pass = x[..., :rd], x[..., rd:]
    return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)


def sinusoidal_table(n_positions: int, dim: int) -> Tensor:
    """The Transformer's fixed table (n_positions, dim): sin on even dims, cos on odd dims."""
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div[: dim // 2])
    return table
