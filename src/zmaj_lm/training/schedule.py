"""Learning-rate schedules as plain functions of the step.

A schedule is a multiplier on each parameter group's peak lr. It depends only on ``step`` and
``total_steps``, never on wall-clock time, so a resumed run replays it exactly.
"""

import math

from zmaj_lm.config.training import ScheduleConfig


def lr_multiplier(cfg: ScheduleConfig, step: int, total_steps: int) -> float:
    """Multiplier for optimizer step ``step`` (0-based) of a run of ``total_steps`` steps.

    Warmup rises linearly to 1 over ``warmup_steps`` (step 0 gets ``1 / warmup``, never 0, so the
    first update is not wasted); warmup is capped at half the run so short runs still decay.
    """
    total = max(total_steps, 1)
    warmup = min(cfg.warmup_steps, total // 2)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.name == "constant":
        return 1.0
    floor = cfg.min_lr_ratio
    if cfg.name == "cosine":
        span = max(total - warmup - 1, 1)
        progress = min((step - warmup) / span, 1.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    decay_steps = max(round(cfg.decay_fraction * total), 1)
    decay_start = max(total - decay_steps, warmup)
    if step < decay_start:
        return 1.0
    progress = min((step - decay_start + 1) / max(total - decay_start, 1), 1.0)
    return 1.0 - (1.0 - floor) * progress
