"""GRPO rollouts: one batched generation per micro-batch, labels exactly on the sampled
completion (stop token included), rewards and group-normalised advantages aligned with rows."""

import torch

from zmaj_lm.config.posttrain import GRPOConfig
from zmaj_lm.data.batch import IGNORE_INDEX
from zmaj_lm.posttrain.chat import ChatFormat
from zmaj_lm.posttrain.examples import PromptExample
from zmaj_lm.posttrain.rewards import exact_match, format_reward
from zmaj_lm.posttrain.rollout import RolloutSource, group_advantages

from .conftest import tiny_model


def test_group_advantages() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv = group_advantages(rewards, 4, scale=True)
    torch.testing.assert_close(adv[4:], torch.zeros(4))
    std = rewards[:4].std()
    torch.testing.assert_close(adv[:4], (rewards[:4] - 0.25) / (std + 1e-4))
    torch.testing.assert_close(group_advantages(rewards, 4, scale=False)[:4], rewards[:4] - 0.25)


def test_rewards() -> None:
    assert exact_match(" 47", "47") == 1.0
    assert exact_match("470", "47") == 0.0
    assert exact_match("-3 and more", "-3") == 1.0
    assert exact_match("abc", "47") == 0.0
    assert format_reward(" 12 ", "x") == 1.0
    assert format_reward("12a", "x") == 0.0


def test_rollout_batch_rows_labels_and_advantages(chat: ChatFormat) -> None:
    model = tiny_model(seed=1)
    prompts = [
        PromptExample([{"role": "user", "content": f"{i}+1="}], str(i + 1)) for i in range(3)
    ]
    cfg = GRPOConfig.model_validate(
        {
            "loader": {"batch_size": 3, "shuffle": False},
            "num_generations": 4,
            "max_new_tokens": 5,
            "rewards": [{"name": "exact_match"}, {"name": "format", "weight": 0.5}],
        }
    )
    seen: list[float] = []
    source = RolloutSource(
        model,
        None,
        chat,
        prompts,
        cfg,
        seed=0,
        grad_accum=1,
        on_round=lambda s: seen.append(s.reward_mean),
    )
    batch = next(iter(source))
    assert batch.input_ids.shape[0] == 12
    assert source.round == 1
    assert len(seen) == 1
    stops = set(chat.stop_token_ids())
    for r in range(12):
        prompt = chat.prompt_ids(prompts[r // 4].prompt)
        assert batch.input_ids[r, : len(prompt)].tolist() == prompt
        labels = batch.labels[r][batch.labels[r] != IGNORE_INDEX].tolist()
        assert labels == batch.input_ids[r, len(prompt) : len(prompt) + len(labels)].tolist()
        assert 1 <= len(labels) <= 5
        assert (labels[-1] in stops) == (len(labels) < 5 or labels[-1] in stops)
        assert not any(t in stops for t in labels[:-1])
        assert batch.labels[r, len(prompt) - 2].item() == IGNORE_INDEX
    groups = batch.advantages.view(3, 4)
    torch.testing.assert_close(groups.mean(dim=1), torch.zeros(3), atol=1e-6, rtol=0)
    assert not batch.has_old
    torch.testing.assert_close(batch.ref_logps, torch.zeros_like(batch.ref_logps))
