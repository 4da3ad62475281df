"""Tiny models and in-memory resumable batch streams for the trainer's unit tests."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from zmaj_lm.config.model import ModelConfig
from zmaj_lm.config.training import TrainingConfig
from zmaj_lm.data.batch import IGNORE_INDEX, Batch
from zmaj_lm.models.transformer import Transformer
from zmaj_lm.training.distributed import DistInfo
from zmaj_lm.training.loop import Run
from zmaj_lm.training.objectives import PretrainObjective
from zmaj_lm.training.optim import build_optimizer

VOCAB = 64


def tiny_model_config(**overrides: Any) -> ModelConfig:
    base: dict[str, Any] = {
        "vocab_size": VOCAB,
        "d_model": 32,
        "n_layers": 2,
        "n_heads": 4,
        "d_ff": 64,
        "max_seq_len": 32,
        "tie_embeddings": True,
    }
    base.update(overrides)
    return ModelConfig(**base)


def make_batch(generator: torch.Generator, rows: int, seq_len: int) -> Batch:
    """A packed batch: 1-3 documents per row, some padding, random tokens."""
    input_ids = torch.randint(0, VOCAB, (rows, seq_len), generator=generator)
    document_ids = torch.full((rows, seq_len), -1, dtype=torch.long)
    position_ids = torch.zeros(rows, seq_len, dtype=torch.long)
    labels = torch.full((rows, seq_len), IGNORE_INDEX, dtype=torch.long)
    for r in range(rows):
        pos, doc = 0, 0
        used = int(torch.randint(seq_len // 2, seq_len + 1, (1,), generator=generator))
        while pos < used:
            n = min(int(torch.randint(2, seq_len, (1,), generator=generator)), used - pos)
            document_ids[r, pos : pos + n] = doc
            position_ids[r, pos : pos + n] = torch.arange(n)
            labels[r, pos : pos + n - 1] = input_ids[r, pos + 1 : pos + n]
            pos, doc = pos + n, doc + 1
    return Batch(
        input_ids=input_ids,
        labels=labels,
        document_ids=document_ids,
        position_ids=position_ids,
        loss_mask=labels != IGNORE_INDEX,
    )


@dataclass
class ListLoader:
    """A resumable, infinite stream over a fixed list of batches."""

    batches: list[Batch]
    pos: int = 0

    def __iter__(self) -> Any:
        while True:
            batch = self.batches[self.pos % len(self.batches)]
            self.pos += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pos = int(state["pos"])


def make_batches(n: int, rows: int = 4, seq_len: int = 16, seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [make_batch(g, rows, seq_len) for _ in range(n)]


def make_run(
    tcfg: TrainingConfig,
    batches: list[Batch],
    out_dir: Path | None = None,
    model_cfg: ModelConfig | None = None,
    val: list[Batch] | None = None,
) -> Run:
    from zmaj_lm.training.ema import EMA
    from zmaj_lm.utils.seeding import seed_everything

    seed_everything(tcfg.seed)
    model_cfg = model_cfg or tiny_model_config()
    model = Transformer(model_cfg)
    compiled: torch.nn.Module = torch.compile(model) if tcfg.compile else model
    return Run(
        cfg=tcfg,
        model_cfg=model_cfg,
        model=compiled,
        objective=PretrainObjective(),
        optimizer=build_optimizer(model, tcfg.optimizer),
        train_loader=ListLoader(batches),
        dist=DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")),
        out_dir=out_dir,
        config_dict={"model": model_cfg.model_dump(mode="json")},
        val_batches=(lambda: val) if val is not None else None,
        bytes_per_token=3.0 if val is not None else None,
        ema=EMA(model, tcfg.ema_decay) if tcfg.ema_decay is not None else None,
        micro_batch_size=batches[0].input_ids.shape[0],
    )


def training_config(**overrides: Any) -> TrainingConfig:
    base: dict[str, Any] = {
        "max_steps": 6,
        "optimizer": {"name": "adamw", "lr": 1e-2},
        "schedule": {"name": "cosine", "warmup_steps": 2},
        "logging": {"progress_bar": False, "every": 1, "plot": False},
        "eval": {"num_samples": 0},
    }
    base.update(overrides)
    return TrainingConfig.model_validate(base)


@pytest.fixture
def batches() -> list[Batch]:
    return make_batches(8)
