"""Post-training loaders under data parallelism: each rank reads a disjoint share of every global
micro-batch, and together the ranks read exactly the rows one process with the global micro-batch
reads (nothing lost, nothing twice), epoch ends included; a single process reads as before.
FSDP cannot run post-training on several processes and is refused with one line; DDP is
accepted by every stage (GRPO's rollout sharding is in test_rollout_sharding.py)."""

from typing import Any

import pytest
import torch

from zmaj_lm.config.loading import ConfigError
from zmaj_lm.config.training import TrainingConfig
from zmaj_lm.posttrain.batches import SequenceExample, SFTLoader, rank_share
from zmaj_lm.posttrain.train import PairLoader, check_world
from zmaj_lm.training.distributed import DistInfo


@pytest.mark.parametrize("total", [1, 2, 5, 8, 9, 13])
@pytest.mark.parametrize("batch_size", [1, 2, 3])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_rank_share_partitions_every_micro_batch(total: int, batch_size: int, world: int) -> None:
    start, seen = 0, []
    while start < total:
        if total - start < world:
            with pytest.raises(ValueError, match="processes"):
                rank_share(start, total, batch_size, 0, world)
            return
        shares = [rank_share(start, total, batch_size, r, world) for r in range(world)]
        stops = {stop for _, stop in shares}
        assert len(stops) == 1, "every rank agrees where the next micro-batch starts"
        stop = stops.pop()
        rows = [i for share, _ in shares for i in share]
        assert sorted(rows) == list(range(start, stop)), "disjoint, and nothing skipped"
        assert all(share for share, _ in shares), "no rank gets an empty micro-batch"
        if world == 1:
            assert stop == min(start + batch_size, total), "one process reads as before"
        seen += rows
        start = stop
    assert sorted(seen) == list(range(total))


def _examples(n: int) -> list[SequenceExample]:
    # distinct lengths and first tokens, so rows can be told apart
    return [
        SequenceExample([i + 1] * (3 + i % 5), [False] + [True] * (2 + i % 5)) for i in range(n)
    ]


def _rows(batch: Any) -> list[tuple[int, ...]]:
    return [tuple(r) for r in batch.input_ids.tolist()]


def _global_steps(make: Any, world: int, steps: int) -> list[list[tuple[Any, ...]]]:
    loaders = [iter(make(r, world)) for r in range(world)]
    out = []
    for _ in range(steps):
        rows: list[tuple[Any, ...]] = []
        for it in loaders:
            rows += _rows(next(it))
        out.append(sorted(rows))
    return out


@pytest.mark.parametrize("packing", ["pack", "pad"])
def test_sft_ranks_read_the_global_batch(packing: str) -> None:
    examples = _examples(23)

    def make(rank: int, world: int, batch: int = 2) -> SFTLoader:
        return SFTLoader(
            examples,
            seq_len=12,
            batch_size=batch * (2 // world),
            packing=packing,  # type: ignore[arg-type]
            pad_id=0,
            seed=3,
            rank=rank,
            world_size=world,
        )

    # several epochs, so the uneven end of an epoch is crossed
    assert _global_steps(make, 2, 30) == _global_steps(make, 1, 30)
    shares = [_rows(next(iter(make(r, 2)))) for r in range(2)]
    assert not set(shares[0]) & set(shares[1])
    assert make(0, 2).state_dict() == make(1, 2).state_dict()


def test_pair_ranks_read_the_global_batch() -> None:
    n = 11
    seqs = [([i], [100 + i]) for i in range(n)] + [([i], [200 + i]) for i in range(n)]
    ref = torch.arange(2 * n, dtype=torch.float32)

    def make(rank: int, world: int) -> PairLoader:
        return PairLoader(
            seqs,
            ref,
            seq_len=4,
            batch_size=4 // world,
            pad_id=0,
            seed=5,
            shuffle=True,
            rank=rank,
            world_size=world,
        )

    def pairs(world: int) -> list[list[tuple[float, float]]]:
        loaders = [iter(make(r, world)) for r in range(world)]
        out = []
        for _ in range(12):
            step: list[tuple[float, float]] = []
            for it in loaders:
                b = next(it)
                p = b.num_pairs
                ref_pairs = zip(b.ref_logps[:p].tolist(), b.ref_logps[p:].tolist(), strict=True)
                rows = _rows(b)
                for j, (chosen, rejected) in enumerate(ref_pairs):
                    # the reference values travel with their own rows
                    assert rows[j][1] == 100 + int(chosen)
                    assert rows[p + j][1] == 200 + int(rejected) - n
                    step.append((chosen, rejected))
            out.append(sorted(step))
        return out

    single = pairs(1)
    assert pairs(2) == single
    # an epoch is 4 + 4 + 3 pairs: every pair once
    assert sorted(c for step in single[:3] for c, _ in step) == list(range(n))


@pytest.mark.parametrize(
    ("stage", "strategy", "message"),
    [
        ("sft", "fsdp", "training.distributed: fsdp is not supported for post-training"),
        ("dpo", "fsdp", "training.distributed: fsdp is not supported for post-training"),
        ("grpo", "fsdp", "training.distributed: fsdp is not supported for post-training"),
    ],
)
def test_refused_with_several_processes(stage: str, strategy: str, message: str) -> None:
    tcfg = TrainingConfig(distributed=strategy)  # type: ignore[arg-type]
    cpu = torch.device("cpu")
    check_world(stage, tcfg, DistInfo(rank=0, world_size=1, local_rank=0, device=cpu))
    with pytest.raises(ConfigError) as err:
        check_world(stage, tcfg, DistInfo(rank=1, world_size=2, local_rank=1, device=cpu))
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith(message)
    # DDP is fine
    check_world(stage, TrainingConfig(), DistInfo(rank=1, world_size=2, local_rank=1, device=cpu))
