"""The pretraining job end to end on the synthetic corpus: artefacts, summary, config errors."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.unit.training.support import run_script, tiny_run_config, write_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("pretrain")
    cfg = tiny_run_config(
        tmp / "data",
        eval={"every": 6, "num_samples": 1, "sample_prompts": ["ab"], "sample_max_new_tokens": 8},
        save_every=6,
        logging={"plot": True},
    )
    config = write_config(tmp / "run.yaml", cfg)
    out = tmp / "out"
    proc = run_script("pretrain.py", "--config", str(config), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "validation loss" in proc.stdout
    return out


def test_outputs_of_a_finished_run(finished_run: Path) -> None:
    out = finished_run
    step = out / "checkpoints" / "step_12"
    for name in (
        "model.safetensors",
        "config.yaml",
        "trainer_state.pt",
        "tokenizer/tokenizer.json",
    ):
        assert (step / name).is_file(), name
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_12"
    assert (out / "checkpoints" / "step_6").is_dir()
    keys = load_file(str(step / "model.safetensors"))
    assert "lm_head.weight" not in keys
    state = torch.load(step / "trainer_state.pt", weights_only=True)
    assert state["trainer"]["step"] == 12
    assert state["loader"][0]["row"] > 0
    for name in ("train.log", "metrics.jsonl", "loss_curve.png", "samples.txt", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 12
    assert 0 < summary["val_loss"] < 6
    assert summary["val_bpb"] > 0
    assert summary["val_loss_src_synthetic"] == pytest.approx(summary["val_loss"], rel=1e-9)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 13))
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "memory_gib"} <= set(train[0])
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [6, 12]
    assert any(k.startswith("val_loss_len_") for k in evals[0])
    assert "val_loss_src_synthetic" in evals[0]
    assert train[-1]["loss"] < train[0]["loss"]


def test_generate_and_evaluate_scripts(finished_run: Path, tmp_path: Path) -> None:
    def greedy(checkpoint: Path) -> subprocess.CompletedProcess[str]:
        args = ["--prompt", "ab", "--max-new-tokens", "10", "--temperature", "0"]
        return run_script("generate.py", "--checkpoint", str(checkpoint), *args)

    gen = greedy(finished_run)
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.startswith("ab")
    again = greedy(finished_run / "checkpoints" / "latest")  # README's form: the pointer file
    assert again.stdout == gen.stdout
    data = Path(json.loads((finished_run / "summary.json").read_text())["data_dir"])
    ev = run_script("evaluate.py", "--checkpoint", str(finished_run), "--data", str(data), "--json")
    assert ev.returncode == 0, ev.stderr
    figures = json.loads(ev.stdout)
    summary = json.loads((finished_run / "summary.json").read_text())
    assert figures["bpb"] > 0
    assert figures["loss"] == pytest.approx(summary["val_loss"], rel=0.05)
    assert figures["loss_src_synthetic"] == pytest.approx(figures["loss"], rel=1e-9)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["training.max_stepz=3"], "training.max_stepz: unknown field"),
        (["training.max_steps=-1"], "training.max_steps"),
        (["training.optimizer.name=sgd"], "training.optimizer.name"),
    ],
)
def test_config_errors_exit_2_without_traceback(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    config = write_config(tmp_path / "run.yaml", tiny_run_config(tmp_path / "data"))
    proc = run_script("pretrain.py", "--config", str(config), "--out", str(tmp_path / "o"), *args)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_script_errors_exit_2(tmp_path: Path) -> None:
    missing = run_script("pretrain.py", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr
    gen = run_script("generate.py", "--checkpoint", str(tmp_path), "--prompt", "x")
    assert gen.returncode == 2
    assert "Traceback" not in gen.stderr
