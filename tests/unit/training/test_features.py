"""Precision modes, activation checkpointing and optional metrics backends."""

import math
from pathlib import Path

import pytest
import torch

from zmaj_lm.config.training import LoggingConfig
from zmaj_lm.data.batch import Batch
from zmaj_lm.training.loop import TrainState, fit, train_step
from zmaj_lm.training.metrics import MetricsLogger, MissingDependencyError, plot_loss_curve

from .conftest import make_run, tiny_model_config, training_config


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(batches: list[Batch], precision: str) -> None:
    run = make_run(training_config(max_steps=4, precision=precision), batches)
    if precision == "fp16":
        run.scaler = torch.amp.GradScaler("cpu")
    summary = fit(run, TrainState())
    assert summary["steps"] == 4
    assert math.isfinite(summary["final_train_loss"])
    assert all(p.dtype == torch.float32 for p in run.raw_model.parameters())


def test_activation_checkpointing_gives_same_gradients(batches: list[Batch]) -> None:
    results = []
    for ckpt in (False, True):
        run = make_run(
            training_config(grad_clip=None),
            batches,
            model_cfg=tiny_model_config(activation_checkpointing=ckpt),
        )
        params = dict(run.raw_model.named_parameters())
        run.optimizer = torch.optim.SGD([{"params": list(params.values()), "peak_lr": 1.0}])
        before = {k: v.detach().clone() for k, v in params.items()}
        train_step(run, TrainState(total_steps=2), batches[:2])
        results.append({k: before[k] - v.detach() for k, v in params.items()})
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", ["wandb", "tensorboard"])
def test_missing_metrics_backend_is_a_clear_error(tmp_path: Path, backend: str) -> None:
    try:
        if backend == "wandb":
            import wandb  # type: ignore[import-not-found]  # noqa: F401
        else:
            import tensorboard  # type: ignore[import-not-found]  # noqa: F401
        installed = True
    except ImportError:
        installed = False
    if installed:
        pytest.skip(f"{backend} is installed here; the error path cannot be exercised")
    with pytest.raises(MissingDependencyError, match=f"training.logging.{backend}"):
        MetricsLogger(tmp_path, LoggingConfig(**{backend: True}), {})


def test_loss_curve_png(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, LoggingConfig(), {})
    for step in range(1, 6):
        logger.log(step, "train", {"loss": 5.0 - step * 0.3})
    logger.log(5, "eval", {"val_loss": 4.0})
    plot_loss_curve(logger.path, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
