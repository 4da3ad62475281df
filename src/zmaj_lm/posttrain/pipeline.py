"""The staged pipeline: pretrain -> SFT -> DPO -> GRPO, each from the previous checkpoint, with
promotion gates between the stages.

Each stage writes into ``OUT/<stage>/``; its figures go into ``OUT/summary.json`` under
``stages.<stage>`` together with the gate verdict (every threshold checked, its value and whether
it passed). A failed gate stops the pipeline: later stages do not run and the summary says which
check failed. Held-out figures are measured the same way on both sides of a stage: DPO's
``pref_accuracy_before`` on the SFT model, GRPO's ``accuracy_before`` on the DPO model.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from zmaj_lm.config.loading import load_config_as
from zmaj_lm.config.posttrain import (
    DPOConfig,
    GateConfig,
    GatesConfig,
    GRPOConfig,
    PipelineStage,
    SFTConfig,
)
from zmaj_lm.config.root import Config
from zmaj_lm.posttrain.train import run_dpo, run_grpo, run_sft
from zmaj_lm.training.checkpoint import latest_checkpoint
from zmaj_lm.training.pretrain import run_pretraining
from zmaj_lm.utils.io import atomic_write_json

STAGES = ("pretrain", "sft", "dpo", "grpo")

_CHECKS: dict[str, tuple[str, str]] = {
    "max_val_loss": ("val_loss", "<="),
    "min_accuracy": ("accuracy", ">="),
    "min_pref_accuracy": ("pref_accuracy_after", ">="),
    "min_pref_gain": ("pref_gain", ">="),
    "min_accuracy_gain": ("accuracy_gain", ">="),
}
"""Gate field -> (stage figure it bounds, comparison)."""


@dataclass
class GateVerdict:
    """Whether a stage may be promoted, with every check made."""

    passed: bool
    checks: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": self.checks}

    def failures(self) -> list[str]:
        return [
            f"{c['metric']} = {c['value']} (needs {c['op']} {c['threshold']})"
            for c in self.checks
            if not c["passed"]
        ]


def check_gate(gate: GateConfig, figures: dict[str, Any]) -> GateVerdict:
    """Compare ``figures`` with every threshold ``gate`` sets; a missing figure fails."""
    checks = []
    for name, threshold in gate.model_dump().items():
        if threshold is None:
            continue
        metric, op = _CHECKS[name]
        value = figures.get(metric)
        ok = (
            isinstance(value, (int, float))
            and value == value
            and (value <= threshold if op == "<=" else value >= threshold)
        )
        checks.append(
            {"metric": metric, "value": value, "op": op, "threshold": threshold, "passed": ok}
        )
    return GateVerdict(all(c["passed"] for c in checks), checks)


@dataclass
class PipelineConfigs:
    """The four stage configs and the gates, loaded and validated up front (a typo in the GRPO
    config must not surface after ten minutes of training)."""

    pretrain: Config
    sft: SFTConfig
    dpo: DPOConfig
    grpo: GRPOConfig
    gates: GatesConfig


def load_pipeline_configs(
    paths: PipelineStage, out: Path, overrides: list[str] | tuple[str, ...] = ()
) -> PipelineConfigs:
    """Load every stage config; ``overrides`` are ``<stage>.<field path>=value`` (stage one of
    pretrain, sft, dpo, grpo, gates)."""
    per: dict[str, list[str]] = {s: [] for s in (*STAGES, "gates")}
    for override in overrides:
        stage, _, rest = override.partition(".")
        if stage not in per or not rest:
            from zmaj_lm.config.loading import ConfigError

            raise ConfigError(
                [
                    f"<overrides>: {override!r}: expected <stage>.<field>=value, stage one of "
                    f"{', '.join(per)}"
                ]
            )
        per[stage].append(rest)
    pretrain_overrides = [f"data.data_dir={out / 'data'}", *per["pretrain"]]
    return PipelineConfigs(
        pretrain=load_config_as(Config, paths.pretrain, pretrain_overrides),
        sft=load_config_as(SFTConfig, paths.sft, per["sft"]),
        dpo=load_config_as(DPOConfig, paths.dpo, per["dpo"]),
        grpo=load_config_as(GRPOConfig, paths.grpo, per["grpo"]),
        gates=load_config_as(GatesConfig, paths.gates, per["gates"]),
    )


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def run_pipeline(configs: PipelineConfigs, out: Path, *, log_level: str = "INFO") -> dict[str, Any]:
    """Run the stages in order until one fails its gate; returns (and writes) the summary."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"stages": {}, "gates": {}, "completed": [], "stopped_at": None}

    def record(stage: str, figures: dict[str, Any], gate: GateConfig) -> bool:
        verdict = check_gate(gate, figures)
        summary["stages"][stage] = {k: _round(v) for k, v in figures.items()}
        summary["gates"][stage] = verdict.as_dict()
        summary["elapsed_s"] = round(time.perf_counter() - started, 1)
        if verdict.passed:
            summary["completed"].append(stage)
            logger.info(f"gate {stage}: passed {[c['metric'] for c in verdict.checks]}")
        else:
            summary["stopped_at"] = stage
            logger.error(f"gate {stage}: FAILED: {'; '.join(verdict.failures())}")
        atomic_write_json(out / "summary.json", summary)
        return verdict.passed

    pre = run_pretraining(configs.pretrain, out / "pretrain", log_level=log_level)
    if not record(
        "pretrain",
        {"val_loss": pre.get("val_loss"), "steps": pre["steps"], "time_s": pre["wall_time_s"]},
        configs.gates.pretrain,
    ):
        return summary
    init = latest_checkpoint(out / "pretrain" / "checkpoints")
    if init is None:
        raise RuntimeError(f"{out / 'pretrain'}: no checkpoint written")

    sft = run_sft(configs.sft, init, out / "sft", log_level=log_level)
    if not record(
        "sft",
        {
            "val_loss": sft["val_loss"],
            "accuracy": sft.get("accuracy"),
            "steps": sft["steps"],
            "time_s": sft["wall_time_s"],
        },
        configs.gates.sft,
    ):
        return summary

    dpo = run_dpo(configs.dpo, out / "sft" / "model", out / "dpo", log_level=log_level)
    if not record(
        "dpo",
        {
            "pref_accuracy_before": dpo["pref_accuracy_before"],
            "pref_accuracy_after": dpo["pref_accuracy_after"],
            "pref_gain": dpo["pref_accuracy_after"] - dpo["pref_accuracy_before"],
            "negatives": dpo["negatives"],
            "pref_accuracy_near_miss_before": dpo["pref_accuracy_near_miss_before"],
            "pref_accuracy_near_miss_after": dpo["pref_accuracy_near_miss_after"],
            "steps": dpo["steps"],
            "time_s": dpo["wall_time_s"],
        },
        configs.gates.dpo,
    ):
        return summary

    grpo = run_grpo(configs.grpo, out / "dpo" / "model", out / "grpo", log_level=log_level)
    record(
        "grpo",
        {
            "accuracy_before": grpo["accuracy_before"],
            "accuracy_after": grpo["accuracy_after"],
            "accuracy": grpo["accuracy_after"],
            "accuracy_gain": grpo["accuracy_after"] - grpo["accuracy_before"],
            "rollout_share": grpo["rollout_share"],
            "sampled_accuracy_before": grpo["sampled_accuracy_before"],
            "sampled_accuracy_after": grpo["sampled_accuracy_after"],
            "steps": grpo["steps"],
            "time_s": grpo["wall_time_s"],
        },
        configs.gates.grpo,
    )
    summary["wall_time_s"] = round(time.perf_counter() - started, 1)
    atomic_write_json(out / "summary.json", summary)
    return summary
