"""SFT, DPO and GRPO gradients do not depend on how a step is split into micro-batches.

The loop sums each micro-batch's ``loss_sum`` and divides by the units of the whole step; a step
over one big micro-batch and over an uneven split must give the same gradient. We read the
gradient as the parameter change of one plain-SGD step (lr 1, no clipping, no momentum).
"""

from collections.abc import Callable

import pytest
import torch

from zmaj_lm.config.training import TrainingConfig
from zmaj_lm.data.batch import Batch
from zmaj_lm.posttrain.batches import RolloutBatch, SequenceExample, pad_sequences, rows_to_batch
from zmaj_lm.posttrain.chat import ChatFormat
from zmaj_lm.posttrain.objectives import DPOObjective, GRPOObjective, SFTObjective
from zmaj_lm.posttrain.train import PairLoader
from zmaj_lm.training.distributed import DistInfo
from zmaj_lm.training.loop import Run, TrainState, train_step
from zmaj_lm.training.objectives import Objective

from .conftest import tiny_model

SEQ = 48


def _sgd_step(objective: Objective, micro: list[Batch]) -> torch.Tensor:
    model = tiny_model(seed=3)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD([{"params": params, "peak_lr": 1.0}], lr=1.0)
    cfg = TrainingConfig.model_validate(
        {"grad_clip": None, "schedule": {"name": "constant", "warmup_steps": 0}, "max_steps": 1}
    )
    run = Run(
        cfg=cfg,
        model_cfg=model.config,
        model=model,
        objective=objective,
        optimizer=opt,
        train_loader=None,  # type: ignore[arg-type]
        dist=DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")),
    )
    before = torch.cat([p.detach().flatten().clone() for p in params])
    result = train_step(run, TrainState(total_steps=1), micro)
    assert not result.skipped
    return before - torch.cat([p.detach().flatten() for p in params])


def _assert_split_invariant(objective: Objective, whole: Batch, split: list[Batch]) -> None:
    g_whole = _sgd_step(objective, [whole])
    g_split = _sgd_step(objective, split)
    assert g_whole.abs().max() > 0
    torch.testing.assert_close(g_split, g_whole, rtol=1e-5, atol=1e-7)


def _sft_rows(chat: ChatFormat) -> list[list[SequenceExample]]:
    """Packed rows of multi-turn conversations with very different numbers of answer tokens."""
    rows = []
    for r in range(5):
        row = []
        for k in range(1 + r % 2):
            answer = "7" * (1 + 4 * ((r + k) % 3))
            msgs = [
                {"role": "user", "content": f"{r}+{k}="},
                {"role": "assistant", "content": answer},
            ]
            t = chat.tokenize(msgs)
            row.append(SequenceExample(t.ids, t.target))
        rows.append(row)
    return rows


def test_sft_split_invariant(chat: ChatFormat) -> None:
    rows = _sft_rows(chat)
    pad = chat.tokenizer.pad_id or 0
    whole = rows_to_batch(rows, SEQ, pad)
    split = [rows_to_batch(rows[:1], SEQ, pad), rows_to_batch(rows[1:], SEQ, pad)]
    assert split[0].num_tokens != split[1].num_tokens
    _assert_split_invariant(SFTObjective(), whole, split)


def _pairs(chat: ChatFormat) -> list[tuple[list[int], list[int]]]:
    prompts = [chat.prompt_ids([{"role": "user", "content": f"{i}*{i}="}]) for i in range(6)]
    chosen = [chat.completion_ids([], str(i * i)) for i in range(6)]
    rejected = [chat.completion_ids([], str(i * i + 10 ** (i % 3))) for i in range(6)]
    return list(zip(prompts, chosen, strict=True)) + list(zip(prompts, rejected, strict=True))


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "simpo"])
def test_dpo_split_invariant(chat: ChatFormat, loss: str) -> None:
    seqs = _pairs(chat)
    ref = -torch.rand(len(seqs), generator=torch.Generator().manual_seed(0)) * 5

    def batches(size: int) -> list[Batch]:
        loader = PairLoader(
            seqs, ref, seq_len=SEQ, batch_size=size, pad_id=0, seed=0, shuffle=False
        )
        it = iter(loader)
        n = len(seqs) // 2
        return [next(it) for _ in range(-(-n // size))]

    objective = DPOObjective(loss, beta=0.5)  # type: ignore[arg-type]
    whole = batches(6)
    assert len(whole) == 1
    _assert_split_invariant(objective, whole[0], batches(4))


def _rollouts(chat: ChatFormat, n: int, seed: int) -> RolloutBatch:
    g = torch.Generator().manual_seed(seed)
    seqs = []
    for i in range(n):
        prompt = chat.prompt_ids([{"role": "user", "content": f"{i}+{seed}="}])
        length = int(torch.randint(1, 7, (1,), generator=g))
        seqs.append((prompt, torch.randint(10, 200, (length,), generator=g).tolist()))
    base = pad_sequences(seqs, SEQ, 0)
    shape = base.labels.shape
    return RolloutBatch(
        **vars(base),
        advantages=torch.randn(n, generator=g),
        old_logps=torch.where(base.loss_mask, -5.6 + 0.3 * torch.randn(shape, generator=g), 0.0),
        ref_logps=torch.where(base.loss_mask, -5.6 + 0.3 * torch.randn(shape, generator=g), 0.0),
        has_old=True,
        max_completion_len=6,
    )


def _cat(parts: list[RolloutBatch]) -> RolloutBatch:
    tensors = {
        k: torch.cat([vars(p)[k] for p in parts])
        for k, v in vars(parts[0]).items()
        if isinstance(v, torch.Tensor)
    }
    return RolloutBatch(**tensors, has_old=True, max_completion_len=6)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_grpo_split_invariant(chat: ChatFormat, loss_type: str) -> None:
    parts = [_rollouts(chat, 2, 0), _rollouts(chat, 5, 1)]
    objective = GRPOObjective(loss_type, beta=0.1, epsilon=0.2)  # type: ignore[arg-type]
    _assert_split_invariant(objective, _cat(parts), parts)


def test_split_changes_gradient_when_averaging_per_micro_batch(chat: ChatFormat) -> None:
    """The check above can fail: a per-micro-batch mean (the TRL #2604 bug) is not invariant."""

    class MeanPerMicroBatch(SFTObjective):
        def count(self, batch: Batch) -> int:
            return 1

        def __call__(self, model: torch.nn.Module, batch: Batch):  # type: ignore[no-untyped-def]
            out = super().__call__(model, batch)
            out.loss_sum = out.loss_sum / batch.num_tokens
            return out

    rows = _sft_rows(chat)
    whole = rows_to_batch(rows, SEQ, 0)
    split = [rows_to_batch(rows[:1], SEQ, 0), rows_to_batch(rows[1:], SEQ, 0)]
    objective: Callable[..., object] = MeanPerMicroBatch()
    with pytest.raises(AssertionError):
        _assert_split_invariant(objective, whole, split)  # type: ignore[arg-type]
