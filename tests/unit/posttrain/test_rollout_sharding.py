"""GRPO rollouts under data parallelism: each rank samples whole groups for its disjoint share of
every global micro-batch's prompts; with ``sampling_seed: prompt`` two ranks at ``batch_size`` P
sample exactly what one process at 2P samples, and the round's statistics are summed over ranks
(a fake two-rank group of threads stands in for ``all_reduce``), so every rank reports the
global figures."""

import threading
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zmaj_lm.config.posttrain import GRPOConfig
from zmaj_lm.posttrain.chat import ChatFormat
from zmaj_lm.posttrain.examples import PromptExample
from zmaj_lm.posttrain.rollout import (
    RolloutSource,
    RolloutStats,
    rollout_sums,
    stats_from_sums,
)

from .conftest import tiny_model

G = 3
ACCUM = 2
PROMPTS = [PromptExample([{"role": "user", "content": f"{i}+1="}], str(i + 1)) for i in range(7)]


class FakeGroup:
    """``world`` threads that sum tensors like ``all_reduce``."""

    def __init__(self, world: int) -> None:
        self.barrier = threading.Barrier(world)
        self.parts: dict[int, Tensor] = {}

    def reducer(self, rank: int) -> Any:
        def reduce(t: Tensor) -> Tensor:
            self.parts[rank] = t.clone()
            self.barrier.wait()
            total = torch.stack([self.parts[r] for r in sorted(self.parts)]).sum(dim=0)
            self.barrier.wait()
            return total

        return reduce


def _cfg(batch_size: int, seeding: str) -> GRPOConfig:
    return GRPOConfig.model_validate(
        {
            "loader": {"batch_size": batch_size},
            "num_generations": G,
            "max_new_tokens": 5,
            "beta": 0.04,
            "rewards": [{"name": "exact_match"}, {"name": "format", "weight": 0.5}],
            "sampling_seed": seeding,
        }
    )


def _source(chat: ChatFormat, cfg: GRPOConfig, rank: int, world: int, reduce: Any) -> RolloutSource:
    model = tiny_model(seed=1)
    return RolloutSource(
        model,
        tiny_model(seed=1).eval(),
        chat,
        PROMPTS,
        cfg,
        seed=5,
        grad_accum=ACCUM,
        rank=rank,
        world_size=world,
        reduce_sum=reduce,
    )


def _rows(batch: Any) -> list[tuple[Any, ...]]:
    return [
        (
            tuple(batch.input_ids[r].tolist()),
            tuple(batch.labels[r].tolist()),
            float(batch.advantages[r]),
            tuple(batch.ref_logps[r].tolist()),
        )
        for r in range(batch.input_ids.shape[0])
    ]


Rows = list[list[list[tuple[Any, ...]]]]  # per rank, per micro-batch, its rows


def _run(
    chat: ChatFormat, seeding: str, world: int, rounds: int
) -> tuple[list[RolloutSource], Rows]:
    """``world`` fake ranks at 4 // world prompts per micro-batch, ``rounds`` rounds each: the
    sources and the rows each yielded."""
    group = FakeGroup(world)
    sources = [
        _source(chat, _cfg(4 // world, seeding), r, world, group.reducer(r) if world > 1 else None)
        for r in range(world)
    ]
    steps: Rows = [[] for _ in range(world)]

    def drive(r: int) -> None:
        it = iter(sources[r])
        for _ in range(rounds * ACCUM):
            steps[r].append(_rows(next(it)))

    threads = [threading.Thread(target=drive, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sources, steps


def _global_rows(steps: Rows) -> list[list[tuple[Any, ...]]]:
    """Every micro-batch's rows over all ranks (sorted: rank order does not matter)."""
    return [sorted(r for rank_rows in step for r in rank_rows) for step in zip(*steps, strict=True)]


def _figures(stats: RolloutStats) -> list[float]:
    return [stats.reward_mean, stats.reward_std, stats.accuracy, stats.completion_len]


def test_rollout_sums_reduce_to_the_global_stats() -> None:
    rng = np.random.default_rng(0)
    rewards = rng.random(12).tolist()
    exact = (rng.random(12) > 0.5).astype(float).tolist()
    lengths = rng.integers(1, 9, 12).tolist()
    parts = [
        rollout_sums(rewards[:5], exact[:5], lengths[:5], 1.0),
        rollout_sums(rewards[5:], exact[5:], lengths[5:], 3.0),
    ]
    stats = stats_from_sums(4, parts[0] + parts[1])
    assert stats.round == 4
    expected = [np.mean(rewards), np.std(rewards), np.mean(exact), np.mean(lengths)]
    np.testing.assert_allclose(_figures(stats), expected, rtol=1e-12)
    assert stats.rollout_s == 2.0, "the ranks' mean wall time"


def test_two_ranks_sample_what_one_process_samples(chat: ChatFormat) -> None:
    rounds = 2  # 2 rounds of 2 x 4 prompts over 7 prompts: the second crosses into epoch 1
    one, one_rows = _run(chat, "prompt", 1, rounds)
    two, two_rows = _run(chat, "prompt", 2, rounds)
    assert _global_rows(two_rows) == _global_rows(one_rows), "same groups, same completions"
    for a, b in zip(*two_rows, strict=True):
        assert len(a) == len(b) == 2 * G, "each rank rolls out its own 2 prompts' groups"
    for r in range(rounds):
        expected = _figures(one[0].history[r])
        for rank in two:
            np.testing.assert_allclose(_figures(rank.history[r]), expected, rtol=1e-12)
    assert two[0].rollout_s == two[1].rollout_s, "every rank holds the same rollout time"
    lengths = {len([t for t in row[1] if t >= 0]) for step in one_rows[0] for row in step}
    assert len(lengths) > 1, "completions of different lengths: figures that tell ranks apart"


def test_round_seeding_differs_by_rank_and_is_reproducible(chat: ChatFormat) -> None:
    first, first_rows = _run(chat, "round", 2, 1)
    _, again_rows = _run(chat, "round", 2, 1)
    assert _global_rows(first_rows) == _global_rows(again_rows), "reproducible"
    g0 = first[0]._round_generator(torch.device("cpu"))
    g1 = first[1]._round_generator(torch.device("cpu"))
    assert g0.initial_seed() != g1.initial_seed(), "ranks sample with different generators"
    single = _run(chat, "round", 1, 1)[0][0]
    one_rank = first[0]
    single.round = one_rank.round = 0
    assert (
        single._round_generator(torch.device("cpu")).initial_seed()
        == one_rank._round_generator(torch.device("cpu")).initial_seed()
    ), "rank 0 keeps the single-process seed"
