"""Preallocated key/value cache for incremental decoding.

Keys and values live in one fixed-size buffer per layer, so decoding appends by writing into a
slice instead of concatenating (which would copy the whole cache every step). Each slot also
records its document id: left padding gets id -1 and is masked like any other document boundary,
which is how a batch of prompts of different lengths decodes exactly as each prompt alone.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from zmaj_lm.config.model import ModelConfig


@dataclass(eq=False)
class KVCache:
    """Per-layer k, v (B, Hkv, max_len, hd), slot document ids (B, max_len), filled length.

    ``single_document`` stays True while no call passed document ids: every slot then belongs to
    one unpadded sequence per row, so a decode step needs no mask at all (and no check for one).
    """

    keys: list[Tensor]
    values: list[Tensor]
    document_ids: Tensor
    length: int = 0
    single_document: bool = True

    @classmethod
    def allocate(
        cls,
        config: ModelConfig,
        batch_size: int,
        max_len: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> "KVCache":
        """Zeroed buffers for ``batch_size`` sequences of up to ``max_len`` tokens."""
        if max_len > config.max_seq_len:
            raise ValueError(
                f"cache length {max_len} exceeds the model's max_seq_len {config.max_seq_len}"
            )
        shape = (batch_size, config.n_kv_heads, max_len, config.head_dim)
        return cls(
            keys=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)],
            values=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)],
            document_ids=torch.full((batch_size, max_len), -2, dtype=torch.long, device=device),
        )

    @property
    def max_len(self) -> int:
        return self.document_ids.shape[1]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (B, Hkv, T, hd) after the filled part; return all keys/values so far."""
        start, end = self.length, self.length + k.shape[2]
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]
