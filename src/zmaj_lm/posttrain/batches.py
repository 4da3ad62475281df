"""Batches of post-training examples, and resumable loaders the fit loop reads them from.

SFT rows use the :class:`~zmaj_lm.data.batch.Batch` contract unchanged: packed rows carry
document ids (no attention and no label crosses from one example into the next, the packing plan
is the data pipeline's ``best_fit``), and labels are set only where the next token is an
assistant token. Preference and rollout batches subclass :class:`Batch` with the per-row extras
their objectives need (reference log-probs, advantages), so the loop moves them to the device and
counts their tokens like any other batch.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from zmaj_lm.data.batch import IGNORE_INDEX, Batch
from zmaj_lm.data.packing import PackingKind, PackPlan, plan_rows
from zmaj_lm.posttrain.chat import TokenizedChat


@dataclass
class SequenceExample:
    """Token ids and the targets mask of one training sequence (see :class:`TokenizedChat`)."""

    ids: list[int]
    target: list[bool]


def truncate(ex: TokenizedChat | SequenceExample, seq_len: int) -> SequenceExample | None:
    """The first ``seq_len`` tokens, or None when no supervised token survives the cut."""
    ids, target = list(ex.ids[:seq_len]), list(ex.target[:seq_len])
    if not any(target[1:]):
        return None
    return SequenceExample(ids, target)


def rows_to_batch(rows: Sequence[Sequence[SequenceExample]], seq_len: int, pad_id: int) -> Batch:
    """Rows of whole examples -> a :class:`Batch` (all tensors (len(rows), seq_len)).

    Each example in a row gets its own document id and positions from 0; ``labels[t]`` is
    ``ids[t + 1]`` where that token is a target, else ``IGNORE_INDEX``.
    """
    B = len(rows)
    input_ids = torch.full((B, seq_len), pad_id, dtype=torch.long)
    labels = torch.full((B, seq_len), IGNORE_INDEX, dtype=torch.long)
    document_ids = torch.full((B, seq_len), -1, dtype=torch.long)
    position_ids = torch.zeros((B, seq_len), dtype=torch.long)
    for r, row in enumerate(rows):
        pos = 0
        for d, ex in enumerate(row):
            n = len(ex.ids)
            ids = torch.tensor(ex.ids, dtype=torch.long)
            tgt = torch.tensor(ex.target, dtype=torch.bool)
            input_ids[r, pos : pos + n] = ids
            lab = torch.where(tgt[1:], ids[1:], IGNORE_INDEX)
            labels[r, pos : pos + n - 1] = lab
            document_ids[r, pos : pos + n] = d
            position_ids[r, pos : pos + n] = torch.arange(n)
            pos += n
    return Batch(
        input_ids=input_ids,
        labels=labels,
        document_ids=document_ids,
        position_ids=position_ids,
        loss_mask=labels != IGNORE_INDEX,
    )


class SFTLoader:
    """Endless, resumable stream of packed (or padded) SFT batches.

    Each epoch shuffles the examples with ``seed + epoch`` and plans rows with the data
    pipeline's ``best_fit`` packing (``pack``) or one example per row (``pad``). The state is
    ``(epoch, row)``, so a resumed run continues with the very next row.

    With ``world_size`` > 1 every rank plans the same rows and takes its share of each global
    micro-batch of ``batch_size * world_size`` rows (see :func:`rank_share`): the ranks' rows
    are disjoint, together they are exactly the rows one process with the global micro-batch
    would read, and the state (a global row position) is the same on every rank.
    """

    def __init__(
        self,
        examples: Sequence[SequenceExample],
        *,
        seq_len: int,
        batch_size: int,
        packing: Literal["pack", "pad"],
        pad_id: int,
        seed: int = 0,
        shuffle: bool = True,
        infinite: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not examples:
            raise ValueError("no SFT examples with supervised tokens")
        self.rank, self.world_size = rank, world_size
        self.examples = list(examples)
        self.lengths = np.asarray([len(e.ids) for e in self.examples], dtype=np.int64)
        self.seq_len, self.batch_size, self.packing = seq_len, batch_size, packing
        self.pad_id, self.seed, self.shuffle, self.infinite = pad_id, seed, shuffle, infinite
        self.epoch, self.row = 0, 0
        self._plans: dict[int, PackPlan] = {}

    def plan(self, epoch: int) -> PackPlan:
        if epoch not in self._plans:
            n = len(self.examples)
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            kind: PackingKind = "best_fit" if self.packing == "pack" else "pad"
            self._plans = {
                epoch: plan_rows(
                    kind,
                    order.astype(np.int64),
                    self.lengths,
                    self.seq_len,
                    overflow="truncate",
                    rng=rng if self.shuffle else None,
                )
            }
        return self._plans[epoch]

    def __iter__(self) -> Iterator[Batch]:
        while True:
            plan = self.plan(self.epoch)
            if self.row >= plan.num_rows:
                if not self.infinite:
                    return
                self.epoch, self.row = self.epoch + 1, 0
                continue
            mine, stop = rank_share(
                self.row, plan.num_rows, self.batch_size, self.rank, self.world_size
            )
            rows = [[self.examples[doc] for doc, _, _ in plan.row(r)] for r in mine]
            self.row = stop
            yield rows_to_batch(rows, self.seq_len, self.pad_id)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "row": self.row}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.row = int(state["epoch"]), int(state["row"])


def rank_share(
    start: int, total: int, batch_size: int, rank: int, world_size: int
) -> tuple[list[int], int]:
    """This rank's items of the global micro-batch starting at ``start`` of ``total``, and where
    the next one starts.

    A global micro-batch is ``batch_size * world_size`` items (fewer at the end of an epoch);
    rank ``r`` takes every ``world_size``-th of them from the ``r``-th on, so the shares are
    disjoint and together the whole global micro-batch. A last remainder smaller than
    ``world_size`` (some rank would get nothing) joins the micro-batch before it. One process
    reads ``range(start, min(start + batch_size, total))``, as before sharding existed.
    """
    stop = min(start + batch_size * world_size, total)
    if 0 < total - stop < world_size:
        stop = total
    if stop - start < world_size:
        raise ValueError(
            f"{total - start} items left for {world_size} processes: every process needs at "
            "least one per micro-batch (more examples or fewer processes)"
        )
    return list(range(start + rank, stop, world_size)), stop


def _to(batch: Any, device: torch.device | str, non_blocking: bool) -> dict[str, Any]:
    return {
        f.name: (
            getattr(batch, f.name).to(device, non_blocking=non_blocking)
            if isinstance(getattr(batch, f.name), Tensor)
            else getattr(batch, f.name)
        )
        for f in fields(batch)
    }


@dataclass
class PreferenceBatch(Batch):
    """``P`` pairs as ``2P`` padded rows: rows ``0..P-1`` prompt + chosen, ``P..2P-1`` prompt +
    rejected. ``labels`` mark completion tokens. ``ref_logps`` (2P,) fp32: summed reference
    log-probs of each row's completion (zeros when the loss needs no reference)."""

    ref_logps: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "PreferenceBatch":
        return PreferenceBatch(**_to(self, device, non_blocking))

    @property
    def num_pairs(self) -> int:
        return int(self.input_ids.shape[0]) // 2


@dataclass
class RolloutBatch(Batch):
    """``N`` sampled completions as padded rows (prompt then completion); ``labels`` mark the
    completion tokens (the stop token included when one was sampled).

    ``advantages`` (N,) fp32; ``old_logps`` and ``ref_logps`` (N, T) fp32 log-probs of each label
    under the policy that sampled it and the reference (0 where ``loss_mask`` is False);
    ``has_old`` is False when the policy has not moved since sampling (one iteration per
    rollout), and the objective then uses its own detached log-probs as TRL does.
    ``max_completion_len`` is the Dr. GRPO constant normaliser.
    """

    advantages: Tensor
    old_logps: Tensor
    ref_logps: Tensor
    has_old: bool
    max_completion_len: int

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "RolloutBatch":
        return RolloutBatch(**_to(self, device, non_blocking))


def pad_sequences(seqs: Sequence[tuple[list[int], list[int]]], seq_len: int, pad_id: int) -> Batch:
    """(prompt ids, completion ids) pairs -> one padded row each, labels on the completion.

    Prompts longer than ``seq_len - 1`` lose their beginning; completions are cut at the row end.
    """
    rows = []
    for prompt, completion in seqs:
        keep_prompt = prompt[-(seq_len - 1) :]
        ids = (keep_prompt + completion)[:seq_len]
        target = ([False] * len(keep_prompt) + [True] * len(completion))[:seq_len]
        rows.append([SequenceExample(ids, target)])
    return rows_to_batch(rows, seq_len, pad_id)


def token_logps(logits: Tensor, labels: Tensor) -> Tensor:
    """Log-probability (B, T) fp32 of each label under ``logits`` (B, T, V); 0 where ignored."""
    mask = labels != IGNORE_INDEX
    safe = labels.clamp(min=0)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe[..., None]).squeeze(-1)
    return torch.where(mask, logp, torch.zeros_like(logp))


def forward_logps(model: torch.nn.Module, batch: Batch) -> Tensor:
    """Per-label log-probs (B, T) of ``batch`` under ``model``."""
    out = model(batch.input_ids, position_ids=batch.position_ids, document_ids=batch.document_ids)
    return token_logps(out.logits, batch.labels)


@torch.no_grad()
def sequence_logps(
    model: torch.nn.Module,
    batches: Iterator[Batch],
    device: torch.device,
    autocast: Callable[[], Any] | None = None,
) -> tuple[Tensor, Tensor]:
    """Summed label log-probs (N,) and label counts (N,) of every row of ``batches``."""
    sums, counts = [], []
    was_training = model.training
    model.eval()
    for batch in batches:
        batch = batch.to(device)
        if autocast is not None:
            with autocast():
                logps = forward_logps(model, batch)
        else:
            logps = forward_logps(model, batch)
        sums.append(logps.sum(dim=1).cpu())
        counts.append(batch.loss_mask.sum(dim=1).cpu())
    model.train(was_training)
    return torch.cat(sums), torch.cat(counts)
