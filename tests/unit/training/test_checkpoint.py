"""Checkpoints: exact resume, clean names, weights-only loading, EMA/compile on or off,
disk-full safety, retention."""

import errno
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from zmaj_lm.data.batch import Batch
from zmaj_lm.models.io import load_model
from zmaj_lm.training import checkpoint as ckpt_mod
from zmaj_lm.training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    read_trainer_state,
)
from zmaj_lm.training.loop import TrainState, fit, resume, save
from zmaj_lm.training.metrics import MetricsLogger, read_metrics

from .conftest import make_run, training_config


def _run(tmp: Path, batches: list[Batch], **overrides: Any) -> tuple[Any, TrainState]:
    tcfg = training_config(**overrides)
    run = make_run(tcfg, batches, out_dir=tmp)
    run.metrics = MetricsLogger(tmp, tcfg.logging, {})
    return run, TrainState()


def _losses(out: Path) -> dict[int, float]:
    return {
        r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"
    }


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_is_bitwise_identical(tmp_path: Path, batches: list[Batch], optimizer: str) -> None:
    opts = {"name": optimizer, "lr": 1e-2}
    full, state = _run(
        tmp_path / "full",
        batches,
        max_steps=6,
        save_every=3,
        optimizer=opts,
        ema_decay=0.9,
    )
    fit(full, state)
    part_dir = tmp_path / "part"
    part, pstate = _run(part_dir, batches, max_steps=6, save_every=3, optimizer=opts, ema_decay=0.9)
    resume(part, pstate, tmp_path / "full" / "checkpoints" / "step_3")
    assert pstate.step == 3
    fit(part, pstate)
    a, b = full.raw_model.state_dict(), part.raw_model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.ema is not None
    assert part.ema is not None
    assert all(torch.equal(full.ema.shadow[k], part.ema.shadow[k]) for k in full.ema.shadow)
    full_losses, part_losses = _losses(tmp_path / "full"), _losses(part_dir)
    assert [full_losses[s] for s in (4, 5, 6)] == [part_losses[s] for s in (4, 5, 6)]


def test_checkpoint_layout_and_weights_only(tmp_path: Path, batches: list[Batch]) -> None:
    run, state = _run(tmp_path, batches, max_steps=2)
    fit(run, state)
    run.model = torch.compile(run.model)  # saving through the wrapper (compiling is not needed)
    save(run, state)
    step_dir = latest_checkpoint(tmp_path / "checkpoints")
    assert step_dir is not None
    assert step_dir.name == "step_2"
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_2"
    keys = set(load_file(str(step_dir / "model.safetensors")))
    assert not any("_orig_mod" in k or "module." in k for k in keys)
    assert "lm_head.weight" not in keys
    state_dict = torch.load(step_dir / "trainer_state.pt", weights_only=True)
    assert state_dict["trainer"]["step"] == 2
    loaded = load_model(step_dir)
    ref = run.raw_model.state_dict()
    assert all(torch.equal(loaded.state_dict()[k], ref[k]) for k in ref)


@pytest.mark.parametrize(("save_compiled", "load_compiled"), [(True, False), (False, True)])
def test_load_with_compile_on_or_off(
    tmp_path: Path, batches: list[Batch], save_compiled: bool, load_compiled: bool
) -> None:
    src, state = _run(tmp_path, batches, max_steps=2)
    fit(src, state)
    if save_compiled:
        src.model = torch.compile(src.model)
        save(src, state)
    dst, dstate = _run(tmp_path / "other", batches, max_steps=2, seed=1)
    if load_compiled:
        dst.model = torch.compile(dst.model)
    resume(dst, dstate, tmp_path / "checkpoints" / "step_2")
    a, b = src.raw_model.state_dict(), dst.raw_model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("save_ema", "load_ema"), [(True, False), (False, True)])
def test_load_with_ema_on_or_off(
    tmp_path: Path, batches: list[Batch], save_ema: bool, load_ema: bool
) -> None:
    src, state = _run(tmp_path, batches, max_steps=2, ema_decay=0.9 if save_ema else None)
    fit(src, state)
    dst, dstate = _run(tmp_path / "o", batches, max_steps=4, ema_decay=0.9 if load_ema else None)
    resume(dst, dstate, tmp_path / "checkpoints" / "step_2")
    assert dstate.step == 2
    if load_ema:
        assert dst.ema is not None
        w = dict(dst.raw_model.named_parameters())["norm.weight"]
        assert torch.equal(dst.ema.shadow["norm.weight"], w.detach())
    fit(dst, dstate)
    assert dstate.step == 4


def test_disk_full_keeps_previous_checkpoint(
    tmp_path: Path, batches: list[Batch], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, state = _run(tmp_path, batches, max_steps=4, save_every=2)
    fit(run, state)
    root = tmp_path / "checkpoints"
    before = read_trainer_state(root / "step_4")

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk)
    state.step = 6
    with pytest.raises(CheckpointError, match=r"disk full.*step_4 is intact"):
        save(run, state)
    assert latest_checkpoint(root) == root / "step_4"
    assert not (root / "step_6").exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []
    after = read_trainer_state(root / "step_4")
    assert after["trainer"] == before["trainer"]


def test_keep_last_prunes_old_checkpoints(tmp_path: Path, batches: list[Batch]) -> None:
    run, state = _run(tmp_path, batches, max_steps=6, save_every=1, checkpoint={"keep_last": 2})
    fit(run, state)
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [5, 6]


def test_resume_truncates_metrics_beyond_checkpoint(tmp_path: Path, batches: list[Batch]) -> None:
    run, state = _run(tmp_path, batches, max_steps=4, save_every=2, checkpoint={"keep_last": 3})
    fit(run, state)
    run2, state2 = _run(tmp_path, batches, max_steps=4)
    resume(run2, state2, tmp_path / "checkpoints" / "step_2")
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").open()]
    assert max(steps) == 2
