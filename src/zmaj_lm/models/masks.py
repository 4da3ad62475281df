"""One description of who may attend to whom, built once per batch and shared by every layer.

A query at slot ``i`` may see the key at slot ``j`` when

* ``j <= i``                                      (causal),
* ``doc[j] == doc[i]``                            (same document; padding carries id -1, so pads
  only see pads and every query row keeps at least itself),
* ``i - j < window``                              (sliding window, per layer).

Slots are indices into the key sequence (the KV cache during generation): queries occupy slots
``q_offset .. q_offset + Tq - 1``. Position ids, which restart at every document, are a separate
input to the positional encodings; the mask never needs them.

Backends ask for the form they consume: the eager and SDPA paths a boolean tensor
(:meth:`AttentionMask.dense`), FlexAttention a block-sparse ``BlockMask``
(:meth:`AttentionMask.block_mask`). Both are built lazily, once per distinct window, and cached on
the description, so a 24-layer model builds them once per batch, not 24 times. Nothing T×T is
kept beyond the forward pass that built it.
"""

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

PAD_DOCUMENT_ID = -1


@dataclass(eq=False)
class AttentionMask:
    """Causal + document + window masking for queries (B, Tq) against keys (B, Tk).

    ``q_doc`` (B, Tq) and ``k_doc`` (B, Tk) are int document ids (``-1`` for padding), or both
    ``None`` when every row is one unpadded document.
    """

    q_len: int
    kv_len: int
    q_offset: int = 0
    q_doc: Tensor | None = None
    k_doc: Tensor | None = None
    _dense: dict[int | None, Tensor] = field(default_factory=dict, repr=False)
    _block: dict[int | None, Any] = field(default_factory=dict, repr=False)
    _additive: dict[tuple[int | None, torch.dtype], Tensor | None] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def from_document_ids(cls, document_ids: Tensor | None, seq_len: int) -> "AttentionMask":
        """Mask for a training/prefill batch: queries and keys are the same ``seq_len`` slots."""
        return cls(q_len=seq_len, kv_len=seq_len, q_doc=document_ids, k_doc=document_ids)

    def is_plain_causal(self, window: int | None) -> bool:
        """True when the mask is exactly lower-triangular (SDPA's ``is_causal`` fast path)."""
        return (
            self.q_doc is None
            and window is None
            and self.q_offset == 0
            and self.q_len == self.kv_len
        )

    @property
    def device(self) -> torch.device:
        return self.q_doc.device if self.q_doc is not None else torch.device("cpu")

    def dense(self, window: int | None, device: torch.device) -> Tensor:
        """Boolean mask (B or 1, 1, Tq, Tk), True where attention is allowed."""
        if window not in self._dense:
            q_slot = torch.arange(self.q_len, device=device) + self.q_offset  # (Tq,)
            k_slot = torch.arange(self.kv_len, device=device)  # (Tk,)
            diff = q_slot[:, None] - k_slot[None, :]  # (Tq, Tk)
            allowed = diff >= 0
            if window is not None:
                allowed = allowed & (diff < window)
            allowed = allowed[None]  # (1, Tq, Tk)
            if self.q_doc is not None and self.k_doc is not None:
                same_doc = self.q_doc[:, :, None] == self.k_doc[:, None, :]  # (B, Tq, Tk)
                allowed = allowed & same_doc.to(device)
            self._dense[window] = allowed[:, None]  # (B, 1, Tq, Tk)
        return self._dense[window]

    def additive(
        self, window: int | None, device: torch.device, dtype: torch.dtype
    ) -> Tensor | None:
        """SDPA's mask: an additive (B|1, 1, Tq, Tk) tensor of 0 / -inf, or ``None`` when every
        query may see every key (a decode step of one unpadded sequence per row).

        PyTorch's CPU SDPA runs a boolean mask about 2x slower than the equivalent additive one
        (forward, fp32, T=256), and tens of times slower with grouped KV heads on the
        non-contiguous views of a KV cache; the boolean form stays for the eager reference.
        Whether a mask is needed is decided from the description alone, never from the tensor's
        values, so decoding does no host-device sync and compiles without a graph break.
        """
        key = (window, dtype)
        if key not in self._additive:
            sees_everything = (
                self.q_doc is None
                and self.q_len == 1
                and self.q_offset == self.kv_len - 1
                and (window is None or window >= self.kv_len)
            )
            bias = None
            if not sees_everything:
                allowed = self.dense(window, device)
                bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
                bias.masked_fill_(~allowed, float("-inf"))
            self._additive[key] = bias
        return self._additive[key]

    def block_mask(self, window: int | None, device: torch.device) -> Any:
        """FlexAttention ``BlockMask`` for this description (built once per window)."""
        if window not in self._block:
            from torch.nn.attention.flex_attention import create_block_mask

            q_doc, k_doc, offset = self.q_doc, self.k_doc, self.q_offset

            def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
                q_slot = q_idx + offset
                allowed = kv_idx <= q_slot
                if window is not None:
                    allowed = allowed & (q_slot - kv_idx < window)
                if q_doc is not None and k_doc is not None:
                    allowed = allowed & (q_doc[b, q_idx] == k_doc[b, kv_idx])
                return allowed

            batch = None if q_doc is None else q_doc.shape[0]
            self._block[window] = create_block_mask(
                mask_mod, batch, None, self.q_len, self.kv_len, device=str(device)
            )
        return self._block[window]


def position_ids_from_documents(document_ids: Tensor) -> Tensor:
    """(B, T) document ids -> (B, T) positions restarting at 0 at each document boundary.

    A boundary is any change of id between neighbours. Padding (id -1) gets positions too, which
    are never used for a loss.
    """
    B, T = document_ids.shape
    idx = torch.arange(T, device=document_ids.device).expand(B, T)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    start_idx = torch.where(starts, idx, torch.zeros_like(idx))
    start_idx = torch.cummax(start_idx, dim=1).values
    return idx - start_idx
