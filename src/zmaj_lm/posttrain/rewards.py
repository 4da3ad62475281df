"""Reward functions for GRPO: plain Python callables ``(completion, answer) -> float``.

Completions are the decoded text the model wrote (the stop token excluded). Rewards are
verifiable: no learned reward model. Register a new one in :data:`REWARDS` to name it in a
config.
"""

import re
from collections.abc import Callable, Sequence

from zmaj_lm.config.posttrain import RewardConfig

RewardFn = Callable[[str, str], float]

_LEADING_INT = re.compile(r"\s*(-?\d+)")
_ONLY_INT = re.compile(r"\s*-?\d+\s*")


def leading_integer(text: str) -> str | None:
    """The integer a completion starts with (leading spaces allowed), as written."""
    match = _LEADING_INT.match(text)
    return match.group(1) if match else None


def exact_match(completion: str, answer: str) -> float:
    """1.0 when the completion starts with exactly the answer (as an integer when both are
    integers, else as stripped text), else 0.0."""
    got = leading_integer(completion)
    if got is not None and re.fullmatch(r"-?\d+", answer.strip()):
        return float(int(got) == int(answer.strip()))
    return float(completion.strip() == answer.strip())


def format_reward(completion: str, answer: str) -> float:
    """1.0 when the completion is one integer and nothing else (the answer is not checked)."""
    del answer
    return float(_ONLY_INT.fullmatch(completion) is not None)


REWARDS: dict[str, RewardFn] = {"exact_match": exact_match, "format": format_reward}


def total_rewards(
    configs: Sequence[RewardConfig], completions: Sequence[str], answers: Sequence[str]
) -> tuple[list[float], dict[str, list[float]]]:
    """Weighted sum of every configured reward per completion, and each reward separately."""
    per: dict[str, list[float]] = {}
    totals = [0.0] * len(completions)
    for cfg in configs:
        fn = REWARDS[cfg.name]
        values = [fn(c, a) for c, a in zip(completions, answers, strict=True)]
        per[cfg.name] = values
        totals = [t + cfg.weight * v for t, v in zip(totals, values, strict=True)]
    return totals, per
