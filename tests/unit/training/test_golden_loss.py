"""Golden loss curve: a seeded debug run must reproduce the stored per-step losses.

It catches silent numerical changes anywhere in model, objective, optimizer or schedule. After an
intended change, regenerate with ``ZMAJ_UPDATE_GOLDEN=1 uv run pytest tests/unit/training/
test_golden_loss.py`` and say why in the commit message.
"""

import json
import os
from pathlib import Path

import pytest

from zmaj_lm.training.loop import TrainState, train_step

from .conftest import make_batches, make_run, training_config

GOLDEN = Path(__file__).resolve().parents[2] / "assets" / "losses" / "debug_tiny.json"
STEPS = 20


def debug_losses() -> list[float]:
    batches = [make_batches(2, rows=4, seq_len=32, seed=11)[i % 2] for i in range(STEPS)]
    tcfg = training_config(
        max_steps=STEPS,
        seed=1234,
        optimizer={"name": "adamw", "lr": 3e-3, "weight_decay": 0.1},
        schedule={"name": "cosine", "warmup_steps": 4, "min_lr_ratio": 0.1},
        grad_clip=1.0,
    )
    run = make_run(tcfg, batches)
    state = TrainState(total_steps=STEPS)
    losses = []
    for b in batches:
        losses.append(train_step(run, state, [b]).loss)
        state.step += 1
    return losses


def test_debug_run_matches_golden_curve() -> None:
    losses = debug_losses()
    if os.environ.get("ZMAJ_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps({"steps": STEPS, "losses": losses}, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())["losses"]
    assert len(golden) == STEPS
    assert losses == pytest.approx(golden, rel=1e-4)
    assert losses[-1] < losses[0] - 0.3
