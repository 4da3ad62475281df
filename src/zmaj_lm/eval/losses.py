"""Per-token losses of a model on a batch, shared by evaluation and the training objectives."""

import torch.nn.functional as F
from torch import Tensor, nn

from zmaj_lm.data.batch import IGNORE_INDEX, Batch


def token_losses(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
    """Per-token cross-entropy (B, T) fp32 (0 where unsupervised) and the MoE aux loss (scalar)."""
    out = model(batch.input_ids, position_ids=batch.position_ids, document_ids=batch.document_ids)
    logits = out.logits  # (B, T, V)
    losses = F.cross_entropy(
        logits.float().flatten(0, 1),
        batch.labels.flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view_as(batch.labels)  # (B, T)
    return losses, out.aux_loss.float()
