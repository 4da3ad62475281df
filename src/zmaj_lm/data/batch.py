"""The batch every loader yields and every objective consumes.

A packed row holds several documents back to back. ``document_ids`` keeps them apart: the model
builds its attention mask from them (no token sees another document), ``position_ids`` restart at
each document, and ``labels`` never ask a document's first token to be predicted from the
previous document's last one. ``source_ids`` says which corpus source each token came from, so
the validation loss can be broken down by source.
"""

from dataclasses import dataclass, field, fields

import torch
from torch import Tensor

IGNORE_INDEX = -100


@dataclass
class Batch:
    """Token ids and their bookkeeping, all (B, T).

    ``input_ids`` long; ``labels`` long, ``IGNORE_INDEX`` where no loss is taken; ``document_ids``
    long, -1 on padding; ``position_ids`` long, restarting at 0 for every document; ``loss_mask``
    bool, True exactly where ``labels != IGNORE_INDEX``; ``source_ids`` long, the source id
    (index into the prepared data's ``source_names``) of each token's document, -1 on padding,
    or None when the batch's maker knows no sources (keyword-only, so subclasses may add
    required fields).
    """

    input_ids: Tensor
    labels: Tensor
    document_ids: Tensor
    position_ids: Tensor
    loss_mask: Tensor
    source_ids: Tensor | None = field(default=None, kw_only=True)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """A copy with every tensor on ``device``."""
        return Batch(
            **{
                f.name: (
                    value.to(device, non_blocking=non_blocking)
                    if isinstance(value := getattr(self, f.name), Tensor)
                    else value
                )
                for f in fields(self)
            }
        )

    @property
    def num_tokens(self) -> int:
        """Number of supervised tokens (the denominator of a token-weighted loss)."""
        return int(self.loss_mask.sum())
