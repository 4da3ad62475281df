"""An interrupted SFT, DPO or GRPO run, resumed from its checkpoint, reproduces the
uninterrupted run bitwise (CPU): same losses, same final weights.

The uninterrupted run saves a checkpoint every step; the interrupted run is a fresh output
directory holding only the checkpoint of an intermediate step, resumed with ``resume_run``.
GRPO resumes in the middle of a rollout round (two optimizer steps per round), so the buffered
rollouts must come back from the checkpoint too.
"""

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.unit.posttrain.conftest import save_init
from zmaj_lm.config.posttrain import DPOConfig, GRPOConfig, SFTConfig
from zmaj_lm.posttrain.train import run_dpo, run_grpo, run_sft

STEPS = 4

COMMON: dict[str, Any] = {
    "data": {"kind": "arithmetic", "num_examples": 120, "arithmetic": {"max_operand": 99}},
    "loader": {"seq_len": 32, "batch_size": 4},
    "training": {
        "max_steps": STEPS,
        "device": "cpu",
        "optimizer": {"name": "adamw", "lr": 0.01},
        "schedule": {"name": "cosine", "warmup_steps": 1},
        "save_every": 1,
        "checkpoint": {"keep_last": 10},
        "eval": {"num_samples": 0},
        "logging": {"every": 1, "progress_bar": False, "plot": False},
    },
}


@pytest.fixture(scope="module")
def init(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_init(tmp_path_factory.mktemp("init"))


def _losses(out: Path) -> list[float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "train"]


def _check_resume(
    init: Path, tmp_path: Path, job: Callable[..., dict[str, Any]], cfg: Any, resume_at: int
) -> tuple[Path, Path]:
    full = tmp_path / "full"
    job(cfg, init, full, log_level="WARNING")
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    name = f"step_{resume_at}"
    shutil.copytree(full / "checkpoints" / name, part / "checkpoints" / name)
    (part / "checkpoints" / "latest").write_text(name + "\n")
    lines = (full / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["step"] <= resume_at]
    (part / "metrics.jsonl").write_text("".join(x + "\n" for x in kept))
    job(cfg, init, part, resume_run=True, log_level="WARNING")
    assert _losses(part) == _losses(full)
    assert len(_losses(full)) == STEPS
    a = load_file(str(full / "model" / "model.safetensors"))
    b = load_file(str(part / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    return full, part


def test_sft_resume(init: Path, tmp_path: Path) -> None:
    cfg = SFTConfig.model_validate(COMMON | {"eval_examples": 4, "lora": {"rank": 2}})
    _check_resume(init, tmp_path, run_sft, cfg, resume_at=2)


def test_dpo_resume(init: Path, tmp_path: Path) -> None:
    cfg = DPOConfig.model_validate(COMMON | {"eval_pairs": 4})
    _check_resume(init, tmp_path, run_dpo, cfg, resume_at=2)


def test_grpo_resume(init: Path, tmp_path: Path) -> None:
    cfg = GRPOConfig.model_validate(
        COMMON
        | {
            "loader": {"batch_size": 2},
            "num_generations": 4,
            "max_new_tokens": 4,
            "num_iterations": 2,
            "eval_problems": 4,
        }
    )
    full, part = _check_resume(init, tmp_path, run_grpo, cfg, resume_at=1)

    def rounds(out: Path) -> list[tuple[int, int, float]]:
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [
            (r["step"], r["round"], r["reward_mean"]) for r in records if r["kind"] == "rollout"
        ]

    # One record per round, logged at the step it is sampled for. Step 1 ends mid-round: round 0
    # comes back from the checkpoint (not sampled or logged again), round 1 is sampled afresh.
    assert rounds(part) == rounds(full)
    assert [step for step, _, _ in rounds(full)] == list(range(1, STEPS + 1, 2))
