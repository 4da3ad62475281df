"""Every shipped run config and recipe validates; the default job stays a 5-10M model."""

from pathlib import Path

import pytest

from zmaj_lm.config.root import load_config
from zmaj_lm.utils.flops import count_parameters

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
RUN_CONFIGS = sorted([*CONFIGS.glob("pretrain/*.yaml"), *CONFIGS.glob("recipes/*.yaml")])


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_run_config_validates(path: Path) -> None:
    config = load_config(path)
    assert config.data.seq_len <= config.model.max_seq_len
    assert config.data.vocab_size <= config.model.vocab_size or config.data.tokenizer_repo


def test_default_job_is_the_tiny_preset_on_cpu() -> None:
    config = load_config(CONFIGS / "pretrain" / "default.yaml")
    assert 5e6 <= count_parameters(config.model) <= 10e6
    assert config.training.device == "cpu"
    assert config.training.max_time_s is not None
    assert config.data.source.kind == "stdlib"


def test_overrides_reach_training_keys() -> None:
    config = load_config(
        CONFIGS / "pretrain" / "default.yaml",
        ["training.max_steps=7", "training.save_every=3"],
    )
    assert config.training.max_steps == 7
    assert config.training.save_every == 3
