"""Run configs and subprocess helpers shared by the trainer's integration tests."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]


def tiny_run_config(data_dir: Path, **training: Any) -> dict[str, Any]:
    """A seconds-long pretraining run on the synthetic corpus (byte-level tokenizer)."""
    cfg: dict[str, Any] = {
        "model": {
            "vocab_size": 264,
            "d_model": 32,
            "n_layers": 2,
            "n_heads": 2,
            "d_ff": 64,
            "max_seq_len": 64,
            "tie_embeddings": True,
        },
        "data": {
            "source": {
                "kind": "synthetic",
                "num_documents": 200,
                "synthetic": {"document_length": 128},
            },
            "vocab_size": 263,
            "data_dir": str(data_dir),
            "seq_len": 64,
            "batch_size": 8,
            "num_workers": 1,
        },
        "training": {
            "max_steps": 12,
            "device": "cpu",
            "num_threads": 1,
            "optimizer": {"name": "adamw", "lr": 0.01},
            "schedule": {"warmup_steps": 2},
            "eval": {"every": 0, "num_samples": 0},
            "save_every": 0,
            "logging": {"progress_bar": False, "every": 1, "plot": False},
        },
    }
    _merge(cfg["training"], training)
    return cfg


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"})
    return e


def run_script(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, str(ROOT / "scripts" / script), *args], timeout)


def torchrun_script(
    script: str, *args: str, nproc: int = 2, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node=nproc scripts/<script> args``."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd = [*launcher, f"--nproc_per_node={nproc}", str(ROOT / "scripts" / script), *args]
    return _run(cmd, timeout)


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(), cwd=ROOT)
