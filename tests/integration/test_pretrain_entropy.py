"""On the synthetic Markov corpus, whose entropy rate is known exactly, a tiny model trained by
the pretraining job gets within 3% of that rate: the whole stack (tokenizer, packing, masks,
objective, optimizer, evaluation) has no leak or bias worth more than that."""

import math
from pathlib import Path

import pytest

from zmaj_lm.config.root import Config
from zmaj_lm.data.sources.synthetic import entropy_rate
from zmaj_lm.training.pretrain import run_pretraining


@pytest.mark.slow
def test_tiny_model_reaches_entropy_rate(tmp_path: Path) -> None:
    config = Config.model_validate(
        {
            "model": {
                "vocab_size": 264,
                "d_model": 64,
                "n_layers": 1,
                "n_heads": 2,
                "d_ff": 128,
                "max_seq_len": 128,
                "tie_embeddings": True,
            },
            "data": {
                "source": {
                    "kind": "synthetic",
                    "num_documents": 300,
                    "synthetic": {"document_length": 1024},
                },
                "vocab_size": 263,
                "data_dir": str(tmp_path / "data"),
                "seq_len": 128,
                "batch_size": 16,
                "num_workers": 1,
            },
            "training": {
                "max_steps": 200,
                "device": "cpu",
                "num_threads": 2,
                "optimizer": {"name": "adamw", "lr": 1e-2, "weight_decay": 0.0},
                "schedule": {"name": "cosine", "warmup_steps": 10, "min_lr_ratio": 0.05},
                "eval": {"num_samples": 0},
                "checkpoint": {"save_final": False},
                "logging": {"progress_bar": False, "every": 50, "plot": False},
            },
        }
    )
    summary = run_pretraining(config, tmp_path / "out")
    h = entropy_rate(config.data.source)
    assert 0.3 < h < math.log(4)
    assert summary["val_loss"] >= h * 0.99, "below the entropy rate: the model sees the future"
    assert summary["val_loss"] <= h * 1.03, f"val loss {summary['val_loss']:.4f} vs H {h:.4f}"
    assert summary["val_bpb"] == pytest.approx(summary["val_loss"] / math.log(2), rel=0.02)
