"""GRPO rollouts: sample groups with the KV-cache generator, score them, and batch them.

One *round* samples ``num_generations`` completions for each of ``batch_size x grad_accum``
prompts, all of a micro-batch's ``P x G`` sequences in one call of
:func:`zmaj_lm.models.generation.generate` (generation dominates GRPO time, TRL #2971, so it is
batched, and its wall time is recorded for the rollout share of each step). Rewards are summed
over the configured functions, advantages normalised within each group, and (for the KL penalty)
the frozen reference's log-probs computed once per round. The round's micro-batches are then
yielded ``num_iterations`` times in order.

The source is resumable: the state holds the round counter, the position inside the round and
the buffered rollouts themselves, and sampling is seeded by ``(seed, round)``, so an interrupted
run continues with exactly the completions it would have trained on.

Under data parallelism (``world_size`` > 1, ``batch_size`` prompts per rank) the prompts of every
global micro-batch of ``batch_size x world_size`` prompts are shared out with
:func:`~zmaj_lm.posttrain.batches.rank_share`. A group (the ``G`` completions of one prompt) never
leaves its rank, so group-normalised advantages are exact locally. Each rank's state holds its own
buffer. With ``sampling_seed: prompt`` each prompt's group is sampled by its own generator seeded
by the prompt's position in the global stream, so any number of processes samples exactly what
one process samples; with ``round`` one batched call per micro-batch is seeded by
``(seed, round, rank)``. The round's statistics are summed over ranks (``reduce_sum``), so every
rank, and rank 0's log, sees the global figures.
"""

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zmaj_lm.config.generation import SamplingConfig
from zmaj_lm.config.posttrain import GRPOConfig
from zmaj_lm.models.generation import generate
from zmaj_lm.models.transformer import Transformer
from zmaj_lm.posttrain.batches import RolloutBatch, forward_logps, pad_sequences, rank_share
from zmaj_lm.posttrain.chat import ChatFormat
from zmaj_lm.posttrain.examples import PromptExample
from zmaj_lm.posttrain.rewards import total_rewards


def group_advantages(rewards: Tensor, group: int, scale: bool) -> Tensor:
    """(N,) rewards, groups of ``group`` consecutive completions -> (N,) advantages.

    ``r - mean(group)``, divided by ``std(group) + 1e-4`` (unbiased std, as TRL) when ``scale``.
    """
    grouped = rewards.view(-1, group)
    adv = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (grouped.std(dim=1, keepdim=True) + 1e-4)
    return adv.reshape(-1)


@dataclass
class RolloutStats:
    """What one round of rollouts produced (completion-weighted means over every rank;
    ``rollout_s`` the ranks' mean wall time)."""

    round: int
    reward_mean: float
    reward_std: float
    accuracy: float
    completion_len: float
    rollout_s: float


def rollout_sums(
    rewards: Sequence[float], exact: Sequence[float], lengths: Sequence[int], rollout_s: float
) -> Tensor:
    """(7,) float64 partial sums of one rank's round: completions, sum and sum of squares of
    rewards, sum of exact-match scores, sum of completion lengths, wall time, and 1 (a rank)."""
    r = np.asarray(rewards, dtype=np.float64)
    return torch.tensor(
        [
            float(len(r)),
            float(r.sum()),
            float((r * r).sum()),
            float(np.sum(np.asarray(exact, dtype=np.float64))),
            float(np.sum(np.asarray(lengths, dtype=np.float64))),
            rollout_s,
            1.0,
        ],
        dtype=torch.float64,
    )


def stats_from_sums(round_: int, sums: Tensor) -> RolloutStats:
    """:class:`RolloutStats` of :func:`rollout_sums` summed over ranks (population std)."""
    n, r_sum, r_sq, exact, length, seconds, ranks = (float(v) for v in sums.tolist())
    n = max(n, 1.0)
    mean = r_sum / n
    return RolloutStats(
        round=round_,
        reward_mean=mean,
        reward_std=float(np.sqrt(max(r_sq / n - mean * mean, 0.0))),
        accuracy=exact / n,
        completion_len=length / n,
        rollout_s=seconds / max(ranks, 1.0),
    )


def _identity(t: Tensor) -> Tensor:
    return t


class RolloutSource:
    """Endless, resumable stream of :class:`RolloutBatch` micro-batches for the fit loop."""

    def __init__(
        self,
        policy: Transformer,
        reference: Transformer | None,
        chat: ChatFormat,
        prompts: Sequence[PromptExample],
        cfg: GRPOConfig,
        *,
        seed: int,
        grad_accum: int,
        on_round: Callable[[RolloutStats], None] | None = None,
        rank: int = 0,
        world_size: int = 1,
        reduce_sum: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if not prompts:
            raise ValueError("GRPO needs at least one training prompt")
        self.rank, self.world_size = rank, world_size
        self.reduce_sum = reduce_sum if reduce_sum is not None else _identity
        self._orders: dict[int, np.ndarray[Any, np.dtype[np.int64]]] = {}
        self.policy, self.reference, self.chat, self.cfg = policy, reference, chat, cfg
        self.prompts = list(prompts)
        self.prompt_ids = [chat.prompt_ids(p.prompt) for p in self.prompts]
        self.seed, self.grad_accum, self.on_round = seed, grad_accum, on_round
        self.stop_ids = chat.stop_token_ids()
        pad = chat.tokenizer.pad_id
        self.pad_id = pad if pad is not None else chat.tokenizer.eos_id
        self.seq_len = max(len(p) for p in self.prompt_ids) + cfg.max_new_tokens
        self.round = 0
        self.pos = 0
        self.buffer: list[RolloutBatch] = []
        self.rollout_s = 0.0
        self.history: list[RolloutStats] = []

    def _round_positions(self, round_: int) -> list[list[int]]:
        """This rank's positions in the global prompt stream, one list per micro-batch of the
        round (one process: ``batch_size`` consecutive positions each)."""
        P, W = self.cfg.loader.batch_size, self.world_size
        per_micro = P * W
        mine, _ = rank_share(0, per_micro, P, self.rank, W)
        start = round_ * per_micro * self.grad_accum
        return [[start + m * per_micro + i for i in mine] for m in range(self.grad_accum)]

    def _prompt_index(self, position: int) -> int:
        """The prompt at ``position`` of the global stream (epoch ``e`` shuffled by
        ``(seed, e)``)."""
        n = len(self.prompts)
        epoch, i = divmod(position, n)
        if epoch not in self._orders:
            order = (
                np.random.default_rng([self.seed, epoch]).permutation(n)
                if self.cfg.loader.shuffle
                else np.arange(n)
            )
            self._orders = {epoch: order.astype(np.int64)}
        return int(self._orders[epoch][i])

    def _prompt_generator(self, position: int, device: torch.device) -> torch.Generator:
        seed = int(np.random.default_rng([self.seed, position]).integers(2**62))
        return torch.Generator(device=device).manual_seed(seed)

    def _round_generator(self, device: torch.device) -> torch.Generator:
        seed = self.seed * 1_000_003 + self.round  # one process: as before sharding existed
        if self.rank > 0:
            seed = int(np.random.default_rng([self.seed, self.round, self.rank]).integers(2**62))
        return torch.Generator(device=device).manual_seed(seed)

    def _sample(
        self, prompts: list[list[int]], sampling: SamplingConfig, generator: torch.Generator
    ) -> tuple[list[list[int]], list[int]]:
        """New tokens of each prompt (stop excluded), and the stop token each ended with (-1:
        none)."""
        device = next(self.policy.parameters()).device
        stopped_with = [-1] * len(prompts)
        active = torch.ones(len(prompts), dtype=torch.bool, device=device)

        def on_tokens(tokens: Tensor, emit: Tensor) -> None:
            nonlocal active
            for i in torch.nonzero(active & ~emit).flatten().tolist():
                stopped_with[i] = int(tokens[i])
            active = active & emit

        outs = generate(self.policy, prompts, sampling, generator=generator, on_tokens=on_tokens)
        return outs, stopped_with

    @torch.no_grad()
    def _micro_batch(
        self, positions: list[int], generator: torch.Generator
    ) -> tuple[RolloutBatch, list[float], list[float], list[int]]:
        cfg, G = self.cfg, self.cfg.num_generations
        indices = [self._prompt_index(k) for k in positions]
        prompts = [self.prompt_ids[i] for i in indices for _ in range(G)]
        sampling = SamplingConfig(
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            stop_token_ids=self.stop_ids,
        )
        device = next(self.policy.parameters()).device
        if cfg.sampling_seed == "round":
            outs, stopped_with = self._sample(prompts, sampling, generator)
        else:
            outs, stopped_with = [], []
            for j, k in enumerate(positions):
                o, s = self._sample(
                    prompts[j * G : (j + 1) * G], sampling, self._prompt_generator(k, device)
                )
                outs += o
                stopped_with += s
        texts = [self.chat.tokenizer.decode(o) for o in outs]
        answers = [self.prompts[i].answer for i in indices for _ in range(G)]
        rewards, per = total_rewards(cfg.rewards, texts, answers)
        completions = [
            o + ([stopped_with[k]] if stopped_with[k] >= 0 else []) for k, o in enumerate(outs)
        ]
        base = pad_sequences(
            list(zip(prompts, completions, strict=True)), self.seq_len, self.pad_id
        )
        r = torch.tensor(rewards, dtype=torch.float32)
        adv = group_advantages(r, G, cfg.scale_rewards)
        zeros = torch.zeros(base.labels.shape, dtype=torch.float32)
        batch = RolloutBatch(
            **vars(base),
            advantages=adv,
            old_logps=zeros,
            ref_logps=zeros,
            has_old=cfg.num_iterations > 1,
            max_completion_len=cfg.max_new_tokens,
        )
        on_device = batch.to(device)
        if cfg.num_iterations > 1:
            batch.old_logps = self._logps(self.policy, on_device)
        if self.reference is not None and cfg.beta != 0:
            batch.ref_logps = self._logps(self.reference, on_device)
        exact = per.get("exact_match", rewards)
        return batch, rewards, exact, [len(c) for c in completions]

    @staticmethod
    def _logps(model: Transformer, batch: RolloutBatch) -> Tensor:
        was_training = model.training
        model.eval()
        logps = forward_logps(model, batch).float().cpu()
        model.train(was_training)
        return logps

    def _new_round(self) -> None:
        t0 = time.perf_counter()
        generator = self._round_generator(next(self.policy.parameters()).device)
        batches, rewards, exact, lengths = [], [], [], []
        for positions in self._round_positions(self.round):
            b, r, e, n = self._micro_batch(positions, generator)
            batches.append(b)
            rewards += r
            exact += e
            lengths += n
        dt = time.perf_counter() - t0
        self.buffer = batches
        self.pos = 0
        sums = self.reduce_sum(rollout_sums(rewards, exact, lengths, dt))
        stats = stats_from_sums(self.round, sums)
        self.rollout_s += stats.rollout_s
        self.history.append(stats)
        if self.on_round is not None:
            self.on_round(stats)
        self.round += 1

    def __iter__(self) -> Iterator[RolloutBatch]:
        while True:
            if not self.buffer or self.pos >= len(self.buffer) * self.cfg.num_iterations:
                self._new_round()
            batch = self.buffer[self.pos % len(self.buffer)]
            self.pos += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "pos": self.pos,
            "rollout_s": self.rollout_s,
            "buffer": [
                {k: v for k, v in vars(b).items() if isinstance(v, Tensor)} for b in self.buffer
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round, self.pos = int(state["round"]), int(state["pos"])
        self.rollout_s = float(state.get("rollout_s", 0.0))
        self.buffer = [
            RolloutBatch(
                **tensors,
                has_old=self.cfg.num_iterations > 1,
                max_completion_len=self.cfg.max_new_tokens,
            )
            for tensors in state["buffer"]
        ]
