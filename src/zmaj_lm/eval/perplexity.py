"""Validation loss, perplexity and bits per byte, weighted by tokens.

The loss is the sum of per-token cross-entropies over every supervised token divided by their
number (never a mean of batch means, which would overweight short batches). Bits per byte turns
it into a tokenizer-independent figure: ``nats_total / (ln 2 * utf8_bytes)``; when only part of a
split is read, ``bytes_per_token`` of the whole split converts it. The loss is also broken down by
the length of the document each token belongs to inside its packed row, and by source when the
batch carries ``source_ids``: each source's figure is the token-weighted mean over that source's
supervised tokens only (``val_loss_src_<name>``), reported for every source with validation
tokens. A corpus can have dozens of sources, so the console gets :func:`source_digest` (the
hardest and easiest) while ``metrics.jsonl`` and ``summary.json`` keep every value.
"""

import math
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from zmaj_lm.data.batch import Batch
from zmaj_lm.eval.losses import token_losses
from zmaj_lm.utils.distributed import all_reduce_sum


@dataclass
class EvalResult:
    """Token-weighted figures of one evaluation pass."""

    loss: float
    """Mean cross-entropy in nats per supervised token."""
    n_tokens: int
    """Supervised tokens evaluated (over all ranks)."""
    bits_per_byte: float | None
    """``loss / ln 2 * tokens / bytes``; ``None`` when the byte count is unknown."""
    by_length: dict[str, float] = field(default_factory=dict)
    """Mean loss of tokens whose document (within its packed row) has a length in each bucket."""
    by_source: dict[str, float] = field(default_factory=dict)
    """Mean loss of the tokens of each data source (when batches carry ``source_ids`` and
    ``source_names`` are given); sources without tokens are left out."""

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    def as_dict(self, prefix: str = "val_") -> dict[str, float]:
        out: dict[str, float] = {
            f"{prefix}loss": self.loss,
            f"{prefix}ppl": self.perplexity,
            f"{prefix}tokens": float(self.n_tokens),
        }
        if self.bits_per_byte is not None:
            out[f"{prefix}bpb"] = self.bits_per_byte
        out.update({f"{prefix}loss_len_{k}": v for k, v in self.by_length.items()})
        out.update({f"{prefix}loss_src_{k}": v for k, v in self.by_source.items()})
        return out


def source_digest(by_source: dict[str, float]) -> str:
    """One short console phrase for a loss by source: how many, the hardest and the easiest.

    Empty for fewer than two sources (the overall loss says it all).
    """
    if len(by_source) < 2:
        return ""
    hard = max(by_source, key=by_source.__getitem__)
    easy = min(by_source, key=by_source.__getitem__)
    return (
        f"{len(by_source)} sources, hardest {hard} {by_source[hard]:.3f}, "
        f"easiest {easy} {by_source[easy]:.3f}"
    )


def bits_per_byte(nats_per_token: float, tokens: float, n_bytes: float) -> float:
    """Bits per UTF-8 byte of a text whose ``tokens`` tokens cost ``nats_per_token`` each."""
    return nats_per_token / math.log(2) * tokens / n_bytes


def document_lengths(document_ids: Tensor) -> Tensor:
    """(B, T) document ids -> (B, T) length of the contiguous document run each token is in."""
    B, T = document_ids.shape
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    segment = starts.flatten().long().cumsum(0) - 1  # (B*T,)
    counts = torch.bincount(segment)
    return counts[segment].view(B, T)


def _bucket_names(bounds: list[int]) -> list[str]:
    names, low = [], 1
    for b in bounds:
        names.append(f"{low}-{b}")
        low = b + 1
    names.append(f"{low}+")
    return names


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    device: torch.device,
    max_batches: int | None = None,
    bytes_per_token: float | None = None,
    length_buckets: list[int] | None = None,
    source_names: list[str] | None = None,
    autocast: Callable[[], AbstractContextManager[None]] = nullcontext,
) -> EvalResult:
    """Evaluate ``model`` on ``batches`` (this rank's shard; sums are all-reduced over ranks).

    ``bytes_per_token`` is UTF-8 bytes per token of the split (for bits per byte);
    ``length_buckets`` the upper bounds of the document-length buckets; ``source_names`` the
    names of the source ids in ``batch.source_ids`` when batches carry them (-1 on padding,
    which the loss mask excludes).
    """
    bounds = sorted(length_buckets or [])
    boundaries = torch.tensor(bounds, dtype=torch.long, device=device)
    n_buckets = len(bounds) + 1
    n_sources = len(source_names) if source_names else 0
    # [loss_sum, tokens, per-bucket loss sums, per-bucket counts, per-source sums, counts]
    acc = torch.zeros(2 + 2 * n_buckets + 2 * n_sources, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        batch = batch.to(device)
        with autocast():
            losses, _ = token_losses(model, batch)  # (B, T)
        mask = batch.loss_mask
        losses = losses.double() * mask
        acc[0] += losses.sum()
        acc[1] += mask.sum()
        bucket = torch.bucketize(document_lengths(batch.document_ids), boundaries)  # (B, T)
        acc[2 : 2 + n_buckets] += torch.bincount(
            bucket[mask], weights=losses[mask], minlength=n_buckets
        )
        acc[2 + n_buckets : 2 + 2 * n_buckets] += torch.bincount(
            bucket[mask], minlength=n_buckets
        ).double()
        if n_sources and batch.source_ids is not None:
            src = batch.source_ids[mask].long()
            base = 2 + 2 * n_buckets
            acc[base : base + n_sources] += torch.bincount(
                src, weights=losses[mask], minlength=n_sources
            )
            acc[base + n_sources :] += torch.bincount(src, minlength=n_sources).double()
    model.train(was_training)
    all_reduce_sum(acc)
    total, n = float(acc[0]), int(acc[1])
    loss = total / max(n, 1)
    names = _bucket_names(bounds)
    by_length = {
        names[b]: float(acc[2 + b] / acc[2 + n_buckets + b])
        for b in range(n_buckets)
        if acc[2 + n_buckets + b] > 0
    }
    by_source: dict[str, float] = {}
    if n_sources and source_names:
        base = 2 + 2 * n_buckets
        by_source = {
            source_names[s]: float(acc[base + s] / acc[base + n_sources + s])
            for s in range(n_sources)
            if acc[base + n_sources + s] > 0
        }
    bpb = loss / math.log(2) / bytes_per_token if bytes_per_token else None
    return EvalResult(
        loss=loss, n_tokens=n, bits_per_byte=bpb, by_length=by_length, by_source=by_source
    )
