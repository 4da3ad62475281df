"""The staged pipeline end to end on reduced settings: every stage runs from the previous
checkpoint, the summary holds each stage's held-out figures and gate verdicts.

The full-size run (``uv run scripts/pipeline.py``) takes several minutes; here every stage is
cut to a few steps and gates are relaxed, so this checks the plumbing, not the gains.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

REDUCED = [
    "pretrain.training.max_steps=30",
    "pretrain.data.source.num_documents=3000",
    "sft.training.max_steps=10",
    "sft.data.num_examples=2000",
    "sft.eval_examples=20",
    "dpo.training.max_steps=6",
    "dpo.data.num_examples=400",
    "dpo.eval_pairs=20",
    "dpo.lora={rank: 4, target_modules: [q_proj, v_proj]}",
    "grpo.training.max_steps=4",
    "grpo.data.num_examples=400",
    "grpo.eval_problems=20",
    "grpo.loader.batch_size=4",
    "gates.pretrain.max_val_loss=10",
    "gates.sft.max_val_loss=10",
    "gates.sft.min_accuracy=0",
    "gates.dpo.min_pref_accuracy=0",
    "gates.dpo.min_pref_gain=-1",
    "gates.grpo.min_accuracy=0",
    "gates.grpo.min_accuracy_gain=-1",
]


@pytest.mark.slow
def test_pipeline_reduced(tmp_path: Path) -> None:
    out = tmp_path / "pipe"
    result = subprocess.run(
        [
            sys.executable,
            "scripts/pipeline.py",
            "--out",
            str(out),
            "--log-level",
            "WARNING",
            *REDUCED,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == ["pretrain", "sft", "dpo", "grpo"]
    assert summary["stopped_at"] is None
    stages = summary["stages"]
    assert 0 <= stages["sft"]["accuracy"] <= 1
    for key in ("pref_accuracy_before", "pref_accuracy_after"):
        assert 0 <= stages["dpo"][key] <= 1
    for key in ("accuracy_before", "accuracy_after"):
        assert 0 <= stages["grpo"][key] <= 1
    assert 0 < stages["grpo"]["rollout_share"] < 1
    assert all(summary["gates"][s]["passed"] for s in summary["completed"])
    for stage in ("sft", "dpo", "grpo"):
        assert (out / stage / "model" / "model.safetensors").is_file()
    assert (out / "dpo" / "adapter" / "adapter_config.json").is_file()
    dpo_log = (out / "dpo" / "train.log").read_text()
    assert "reference log-probs" in dpo_log
