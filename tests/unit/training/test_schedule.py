"""LR schedule shapes: warmup, cosine, warmup-stable-decay, constant."""

import itertools
import math

import pytest

from zmaj_lm.config.training import ScheduleConfig
from zmaj_lm.training.schedule import lr_multiplier


def curve(cfg: ScheduleConfig, total: int) -> list[float]:
    return [lr_multiplier(cfg, s, total) for s in range(total)]


def test_warmup_is_linear_and_starts_above_zero() -> None:
    cfg = ScheduleConfig(name="constant", warmup_steps=4)
    assert curve(cfg, 10) == [0.25, 0.5, 0.75, 1.0, 1, 1, 1, 1, 1, 1]


def test_cosine_decays_monotonically_to_floor() -> None:
    cfg = ScheduleConfig(name="cosine", warmup_steps=10, min_lr_ratio=0.1)
    c = curve(cfg, 101)
    assert c[9] == 1.0
    after = c[10:]
    assert all(a >= b for a, b in itertools.pairwise(after))
    assert after[-1] == pytest.approx(0.1)
    mid = 10 + 45
    assert c[mid] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_wsd_is_flat_then_linear_decay() -> None:
    cfg = ScheduleConfig(name="wsd", warmup_steps=5, decay_fraction=0.2, min_lr_ratio=0.0)
    c = curve(cfg, 100)
    assert c[5:80] == [1.0] * 75
    decay = c[80:]
    diffs = [a - b for a, b in itertools.pairwise(decay)]
    assert all(d == pytest.approx(diffs[0]) for d in diffs)
    assert decay[-1] == pytest.approx(0.0)


def test_warmup_capped_for_short_runs() -> None:
    cfg = ScheduleConfig(name="cosine", warmup_steps=100, min_lr_ratio=0.0)
    c = curve(cfg, 10)
    assert max(c) == 1.0
    assert c[-1] < 0.1
