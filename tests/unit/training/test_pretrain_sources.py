"""The pretraining job reports the validation loss by source: every key in summary.json and
metrics.jsonl, a short digest on the console."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from zmaj_lm.config.root import Config
from zmaj_lm.training.pretrain import run_pretraining
from zmaj_lm.utils.logging import setup_logging

from .support import tiny_run_config


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    setup_logging("INFO")


def test_summary_and_metrics_carry_the_loss_by_source(
    tmp_path: Path, restore_logging: None
) -> None:
    raw = tiny_run_config(
        tmp_path / "data", max_steps=2, eval={"every": 1, "max_batches": 2, "num_samples": 0}
    )
    raw["data"]["source"] = {"kind": "arithmetic", "num_documents": 400}
    raw["data"]["seq_len"] = 32
    raw["training"]["checkpoint"] = {"save_final": False}
    config = Config.model_validate(raw)
    summary = run_pretraining(config, tmp_path / "out", log_level="WARNING")
    keys = {f"val_loss_src_{n}" for n in ("add", "sub", "mul")}
    assert {k for k in summary if k.startswith("val_loss_src_")} == keys
    by_source = [summary[k] for k in keys]
    assert min(by_source) <= summary["val_loss"] <= max(by_source)
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {k: written[k] for k in keys} == {k: summary[k] for k in keys}
    records = [
        json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    ]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [1, 2]
    assert all(keys <= set(r) for r in evals)
    assert evals[-1]["val_loss_src_mul"] == summary["val_loss_src_mul"]
    log = (tmp_path / "out" / "train.log").read_text()
    assert "step 1: val loss" in log
    assert "| 3 sources, hardest " in log
    (summary_line,) = [line for line in log.splitlines() if "summary: {" in line]
    assert "val_loss_src_" not in summary_line, "the console line stays short"
    assert "validation loss by source: 3 sources, hardest" in summary_line
