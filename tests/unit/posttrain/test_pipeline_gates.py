"""Promotion gates: thresholds checked per stage; a failed gate stops the pipeline there."""

from pathlib import Path
from typing import Any

import pytest

from zmaj_lm.config.loading import ConfigError
from zmaj_lm.config.posttrain import GateConfig, PipelineStage
from zmaj_lm.posttrain import pipeline
from zmaj_lm.posttrain.pipeline import check_gate, load_pipeline_configs, run_pipeline

ROOT = Path(__file__).resolve().parents[3]


def _paths() -> PipelineStage:
    defaults = PipelineStage()
    return PipelineStage(**{k: str(ROOT / v) for k, v in defaults.model_dump().items()})


def test_check_gate_bounds_and_missing_figures() -> None:
    gate = GateConfig(max_val_loss=1.0, min_accuracy=0.5, min_accuracy_gain=0.05)
    ok = check_gate(gate, {"val_loss": 0.9, "accuracy": 0.5, "accuracy_gain": 0.06})
    assert ok.passed
    assert [c["metric"] for c in ok.checks] == ["val_loss", "accuracy", "accuracy_gain"]
    bad = check_gate(gate, {"val_loss": 1.2, "accuracy": 0.7})
    assert not bad.passed
    assert bad.failures() == [
        "val_loss = 1.2 (needs <= 1.0)",
        "accuracy_gain = None (needs >= 0.05)",
    ]
    assert not check_gate(GateConfig(max_val_loss=1.0), {"val_loss": float("nan")}).passed
    assert check_gate(GateConfig(), {}).passed


def test_stage_overrides_are_routed_and_checked(tmp_path: Path) -> None:
    configs = load_pipeline_configs(
        _paths(), tmp_path, ["grpo.num_generations=4", "gates.sft.min_accuracy=0.9"]
    )
    assert configs.grpo.num_generations == 4
    assert configs.gates.sft.min_accuracy == 0.9
    assert configs.pretrain.data.data_dir == str(tmp_path / "data")
    with pytest.raises(ConfigError, match="stage one of"):
        load_pipeline_configs(_paths(), tmp_path, ["num_generations=4"])
    with pytest.raises(ConfigError, match="bta: unknown field"):
        load_pipeline_configs(_paths(), tmp_path, ["dpo.bta=0.1"])


def test_failed_gate_stops_the_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def pretrain(config: Any, out: Path, **_: Any) -> dict[str, Any]:
        calls.append("pretrain")
        (out / "checkpoints" / "step_1").mkdir(parents=True)
        return {"val_loss": 1.0, "steps": 1, "wall_time_s": 0.1}

    def sft(cfg: Any, init: Path, out: Path, **_: Any) -> dict[str, Any]:
        calls.append("sft")
        return {"val_loss": 0.5, "accuracy": 0.2, "steps": 1, "wall_time_s": 0.1}

    def dpo(cfg: Any, init: Path, out: Path, **_: Any) -> dict[str, Any]:
        calls.append("dpo")
        assert init == tmp_path / "sft" / "model"
        return {
            "pref_accuracy_before": 0.6,
            "pref_accuracy_after": 0.55,
            "negatives": "near_miss",
            "pref_accuracy_near_miss_before": 0.6,
            "pref_accuracy_near_miss_after": 0.55,
            "steps": 1,
            "wall_time_s": 0.1,
        }

    def grpo(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise AssertionError("GRPO must not run after a failed DPO gate")

    monkeypatch.setattr(pipeline, "run_pretraining", pretrain)
    monkeypatch.setattr(pipeline, "latest_checkpoint", lambda root: root / "step_1")
    monkeypatch.setattr(pipeline, "run_sft", sft)
    monkeypatch.setattr(pipeline, "run_dpo", dpo)
    monkeypatch.setattr(pipeline, "run_grpo", grpo)
    configs = load_pipeline_configs(
        _paths(),
        tmp_path,
        [
            "gates.pretrain.max_val_loss=2",
            "gates.sft.min_accuracy=0.1",
            "gates.dpo.min_pref_gain=0.0",
        ],
    )
    summary = run_pipeline(configs, tmp_path)
    assert calls == ["pretrain", "sft", "dpo"]
    assert summary["completed"] == ["pretrain", "sft"]
    assert summary["stopped_at"] == "dpo"
    assert summary["stages"]["dpo"]["pref_gain"] == pytest.approx(-0.05)
    assert summary["gates"]["dpo"]["passed"] is False
    assert (tmp_path / "summary.json").is_file()
