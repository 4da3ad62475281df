"""Two processes on gloo (DDP and FSDP2) take the same steps as one process with the same global
batch: per-step losses and final weights agree to float-reordering tolerance."""

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from tests.unit.training.conftest import (
    ListLoader,
    make_batches,
    tiny_model_config,
    training_config,
)
from zmaj_lm.data.batch import Batch
from zmaj_lm.training.checkpoint import full_model_state
from zmaj_lm.training.distributed import init_distributed, shutdown_distributed, wrap_model
from zmaj_lm.training.loop import Run, TrainState, train_step
from zmaj_lm.training.objectives import PretrainObjective
from zmaj_lm.training.optim import build_optimizer

STEPS = 4


def _rows(batch: Batch, rank: int, world: int) -> Batch:
    n = batch.input_ids.shape[0] // world
    sl = slice(rank * n, (rank + 1) * n)
    return Batch(
        input_ids=batch.input_ids[sl],
        labels=batch.labels[sl],
        document_ids=batch.document_ids[sl],
        position_ids=batch.position_ids[sl],
        loss_mask=batch.loss_mask[sl],
    )


def _train(rank: int, world: int, strategy: str, port: int, out: str) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
        }
    )
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    from zmaj_lm.models.transformer import Transformer

    torch.manual_seed(0)
    tcfg = training_config(
        max_steps=STEPS,
        distributed=strategy,
        optimizer={"name": "muon", "lr": 1e-2, "muon_lr": 0.02},
        ema_decay=0.9,
    )
    model = Transformer(tiny_model_config())
    wrapped = wrap_model(model, tcfg.distributed, info)
    from zmaj_lm.training.ema import EMA

    global_batches = make_batches(STEPS, rows=8, seq_len=16, seed=7)
    run = Run(
        cfg=tcfg,
        model_cfg=model.config,
        model=wrapped,
        objective=PretrainObjective(),
        optimizer=build_optimizer(model, tcfg.optimizer),
        train_loader=ListLoader([_rows(b, rank, world) for b in global_batches]),
        dist=info,
        ema=EMA(model, 0.9),
    )
    state = TrainState(total_steps=STEPS)
    losses = []
    for b in global_batches:
        # two micro-batches per step on each rank, so accumulation and sync are exercised
        local = _rows(b, rank, world)
        half = local.input_ids.shape[0] // 2
        micro = [_rows(local, 0, 2), _rows(local, 1, 2)] if half else [local]
        losses.append(train_step(run, state, micro).loss)
        state.step += 1
    weights = full_model_state(run.model)
    assert run.ema is not None
    ema = run.ema.state_dict()
    if rank == 0:
        torch.save({"losses": losses, "weights": weights, "ema": ema}, out)
    shutdown_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(world: int, strategy: str, out: Path) -> dict[str, Any]:
    if world == 1:
        mp.spawn(_train, args=(1, "ddp", _free_port(), str(out)), nprocs=1)
    else:
        mp.spawn(_train, args=(world, strategy, _free_port(), str(out)), nprocs=world)
    result: dict[str, Any] = torch.load(out, weights_only=True)
    return result


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _launch(1, "ddp", tmp_path_factory.mktemp("single") / "r.pt")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(single: dict[str, Any], strategy: str, tmp_path: Path) -> None:
    multi = _launch(2, strategy, tmp_path / "r.pt")
    assert multi["losses"] == pytest.approx(single["losses"], rel=1e-5)
    for k, v in single["weights"].items():
        torch.testing.assert_close(multi["weights"][k], v, rtol=1e-4, atol=1e-5)
    for k, v in single["ema"].items():
        torch.testing.assert_close(multi["ema"][k], v, rtol=1e-4, atol=1e-5)
    assert single["losses"][-1] < single["losses"][0]
