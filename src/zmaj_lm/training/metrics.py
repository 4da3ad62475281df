"""Where metrics go: ``OUT/metrics.jsonl`` always; W&B and TensorBoard when enabled.

Each record is one JSON object with ``step``, ``kind`` (``train``, ``eval``, ``summary``) and
numbers. After a resume, records of steps beyond the checkpoint are dropped first, so the file
reads as one uninterrupted run.
"""

import json
import math
import os
from pathlib import Path
from typing import Any

import psutil
import torch
from loguru import logger

from zmaj_lm.config.training import LoggingConfig
from zmaj_lm.utils.io import atomic_write_text

METRICS_NAME = "metrics.jsonl"
_KNOWN_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


class MissingDependencyError(RuntimeError):
    """An optional metrics backend was enabled but its package is not installed."""


def peak_flops(device: torch.device, configured: float | None) -> float | None:
    """Peak FLOP/s for MFU: the configured value, a known GPU's dense bf16 peak, or ``None``."""
    if configured is not None:
        return configured
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in _KNOWN_PEAK_BF16.items():
            if key in name:
                return value
    return None


def memory_gib(device: torch.device) -> float:
    """Peak CUDA memory allocated, or this process's resident memory on CPU, in GiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return float(psutil.Process(os.getpid()).memory_info().rss) / 2**30


class MetricsLogger:
    """Fan-out of metric records to every enabled sink (only instantiate on rank 0)."""

    def __init__(self, out_dir: Path, cfg: LoggingConfig, run_config: dict[str, Any]) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / METRICS_NAME
        self.cfg = cfg
        self._wandb: Any = None
        self._tb: Any = None
        if cfg.wandb:
            try:
                import wandb  # type: ignore[import-not-found]
            except ImportError as exc:
                raise MissingDependencyError(
                    "training.logging.wandb is true but wandb is not installed "
                    "(pip install wandb, or set training.logging.wandb=false)"
                ) from exc
            self._wandb = wandb.init(
                project=cfg.wandb_project,
                mode=cfg.wandb_mode,
                dir=str(out_dir),
                config=run_config,
            )
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise MissingDependencyError(
                    "training.logging.tensorboard is true but tensorboard is not installed "
                    "(pip install tensorboard, or set training.logging.tensorboard=false)"
                ) from exc
            self._tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (called when resuming from that step)."""
        if not self.path.is_file():
            return
        kept = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, step: int, kind: str, values: dict[str, Any]) -> None:
        record = {"step": step, "kind": kind, **values}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=_jsonable) + "\n")
        numeric = {
            f"{kind}/{k}": float(v)
            for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if self._wandb is not None:
            self._wandb.log(numeric, step=step)
        if self._tb is not None:
            for k, v in numeric.items():
                self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
        if self._tb is not None:
            self._tb.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return str(value)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` (a torn last line from a crash is skipped)."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning(f"{path}: skipping unreadable line {line[:80]!r}")
    return records


def plot_loss_curve(metrics_path: Path, out_png: Path) -> None:
    """Training loss (and validation loss) against step, written with matplotlib's Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if r["kind"] == "train" and "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if r["kind"] == "eval" and "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", linewidth=1)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/token)")
    finite = [v for _, v in train + val if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.95, min(max(finite), min(finite) * 3) * 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, out_png)
