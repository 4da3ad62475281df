"""``torchrun --nproc_per_node=2 scripts/sft.py``, ``scripts/dpo.py`` and ``scripts/grpo.py`` on
CPU (gloo, DDP): with ``loader.batch_size`` halved per rank, the two processes take the very steps
of one process with the whole micro-batch (same rows), so per-step losses and final weights agree
to float-reordering tolerance; rank 0 alone writes one set of outputs. DPO trains LoRA adapters
(frozen base weights under DDP). GRPO samples with ``sampling_seed: prompt`` (each prompt's group
seeded by its global position), so the two ranks sample exactly the completions of one process,
and the logged rollout statistics are the global ones. The refusal of FSDP is in
tests/unit/posttrain/test_rank_sharding.py."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.unit.posttrain.conftest import save_init
from tests.unit.training.support import torchrun_script
from zmaj_lm.config.posttrain import DPOConfig, GRPOConfig, SFTConfig
from zmaj_lm.models.io import save_model
from zmaj_lm.posttrain.train import chat_format, load_init, run_dpo, run_grpo, run_sft

STEPS = 4
BATCH = 4  # one process; each of two ranks reads BATCH // 2

COMMON: dict[str, Any] = {
    "data": {"kind": "arithmetic", "num_examples": 40, "arithmetic": {"max_operand": 99}},
    "loader": {"seq_len": 32, "batch_size": BATCH},
    "training": {
        "max_steps": STEPS,
        "device": "cpu",
        "num_threads": 1,
        "grad_accum_steps": 2,
        "optimizer": {"name": "adamw", "lr": 0.01},
        "schedule": {"name": "cosine", "warmup_steps": 1},
        "save_every": 2,
        "eval": {"num_samples": 0},
        "logging": {"every": 1, "progress_bar": False, "plot": False},
    },
}
SFT: dict[str, Any] = COMMON | {"eval_examples": 2, "max_new_tokens": 2}
DPO: dict[str, Any] = COMMON | {"eval_pairs": 4, "lora": {"rank": 2}}
GRPO: dict[str, Any] = COMMON | {
    "num_generations": 3,
    "max_new_tokens": 4,
    "beta": 0.04,
    "eval_problems": 4,
    "sampling_seed": "prompt",
    "rewards": [{"name": "exact_match"}, {"name": "format", "weight": 0.5}],
    "training": COMMON["training"] | {"optimizer": {"name": "adamw", "lr": 0.001}},
}
ROLLOUT_FIGURES = ["reward_mean", "reward_std", "accuracy", "completion_len"]


@pytest.fixture(scope="module")
def init(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_init(tmp_path_factory.mktemp("init"))


@pytest.fixture(scope="module")
def grpo_init(init: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``init`` whose output layer puts nearly all mass on digits and the stop tokens, so the
    random model's completions earn varied rewards (non-zero advantages, a moving policy)."""
    path = tmp_path_factory.mktemp("grpo_init")
    start = load_init(init)
    tok, model = start.tokenizer, start.model
    stops = chat_format(start, GRPOConfig().chat).stop_token_ids()
    keep = [tok.encode(str(d))[0] for d in range(10)] + stops * 3
    with torch.no_grad():
        weight = model.lm_head.weight
        rows = torch.randn(len(keep), weight.shape[1], generator=torch.Generator().manual_seed(0))
        weight.zero_()
        weight[keep] = rows
    save_model(model, path)
    tok.save(path / "tokenizer")
    return path


def _torchrun(script: str, init: Path, cfg: dict[str, Any], out: Path, *extra: str) -> Any:
    cfg_path = out.parent / f"{out.name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    return torchrun_script(
        script,
        "--init",
        str(init),
        "--config",
        str(cfg_path),
        "--out",
        str(out),
        "--log-level",
        "INFO",
        *extra,
        timeout=300,
    )


def _halved(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg | {"loader": cfg["loader"] | {"batch_size": BATCH // 2}}


def _train_losses(out: Path) -> list[float]:
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == list(range(1, STEPS + 1)), "rank 0 alone logs, once per step"
    return [r["loss"] for r in records if r["kind"] == "train"]


def _check_same_run(one: Path, two: Path) -> None:
    torch.testing.assert_close(_train_losses(two), _train_losses(one), rtol=1e-5, atol=0)
    a = load_file(str(one / "model" / "model.safetensors"))
    b = load_file(str(two / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    ckpts = sorted(p.name for p in (two / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert ckpts == ["step_2", "step_4"]
    assert json.loads((two / "summary.json").read_text())["steps"] == STEPS


@pytest.mark.slow
def test_sft_two_processes_match_one(init: Path, tmp_path: Path) -> None:
    one = tmp_path / "one"
    run_sft(SFTConfig.model_validate(SFT), init, one, log_level="WARNING")
    proc = _torchrun("sft.py", init, _halved(SFT), tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("SFT: 4 steps") == 2, "every rank reports rank 0's summary"
    _check_same_run(one, tmp_path / "two")
    log = (tmp_path / "two" / "train.log").read_text()
    assert "rank 0 of 2 (ddp)" in log


@pytest.mark.slow
def test_dpo_lora_two_processes_match_one(init: Path, tmp_path: Path) -> None:
    one = tmp_path / "one"
    run_dpo(DPOConfig.model_validate(DPO), init, one, log_level="WARNING")
    proc = _torchrun("dpo.py", init, _halved(DPO), tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_same_run(one, tmp_path / "two")
    assert (tmp_path / "two" / "adapter").is_dir()
    ref = load_file(str(tmp_path / "two" / "ref_logps.safetensors"))["ref_logps"]
    assert torch.equal(ref, load_file(str(one / "ref_logps.safetensors"))["ref_logps"])


def _records(out: Path, kind: str) -> list[dict[str, Any]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.mark.slow
def test_grpo_two_processes_match_one(grpo_init: Path, tmp_path: Path) -> None:
    one = tmp_path / "one"
    run_grpo(GRPOConfig.model_validate(GRPO), grpo_init, one, log_level="WARNING")
    proc = _torchrun("grpo.py", grpo_init, _halved(GRPO), tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_same_run(one, tmp_path / "two")
    train_one, train_two = _records(one, "train"), _records(tmp_path / "two", "train")
    torch.testing.assert_close(
        [r["kl"] for r in train_two], [r["kl"] for r in train_one], rtol=1e-4, atol=1e-7
    )
    rollouts_one, rollouts_two = _records(one, "rollout"), _records(tmp_path / "two", "rollout")
    assert [r["round"] for r in rollouts_two] == list(range(STEPS)), "one record per round"
    for a, b in zip(rollouts_one, rollouts_two, strict=True):
        for k in ROLLOUT_FIGURES:  # the global figures, not rank 0's half
            assert b[k] == pytest.approx(a[k], rel=1e-9, abs=1e-12), k
    assert sum(r["reward_std"] > 0 for r in rollouts_two) >= 2, "varied rewards: the policy moves"
    assert len({r["reward_mean"] for r in rollouts_two}) > 1, "figures that tell rounds apart"
    s1 = json.loads((one / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    for k in ["accuracy_before", "accuracy_after", "train_reward_last", "train_accuracy_first"]:
        assert s2[k] == pytest.approx(s1[k], abs=1e-6), k
    assert 0 < s2["rollout_share"] < 1
    assert "rank 0 of 2 (ddp)" in (tmp_path / "two" / "train.log").read_text()
