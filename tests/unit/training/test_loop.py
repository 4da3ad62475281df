"""The fit loop: token-weighted accumulation, skipping non-finite steps, OOM handling, budgets."""

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from zmaj_lm.data.batch import Batch
from zmaj_lm.training.loop import (
    OutOfMemoryAdviceError,
    TrainingDivergedError,
    TrainState,
    _split_rows,
    fit,
    train_step,
)
from zmaj_lm.training.objectives import ObjectiveOutput, PretrainObjective

from .conftest import make_batches, make_run, training_config


def _cat(batches: list[Batch]) -> Batch:
    return Batch(
        **{
            f: torch.cat([getattr(b, f) for b in batches])
            for f in ("input_ids", "labels", "document_ids", "position_ids", "loss_mask")
        }
    )


def _grads_after(split: int, big: Batch, token_weighted: bool = True) -> dict[str, torch.Tensor]:
    """Gradients of one step over ``big`` cut into ``split`` micro-batches (SGD lr=1 exposes
    them as the weight change)."""
    tcfg = training_config(
        grad_clip=None, optimizer={"name": "adamw", "lr": 1.0, "weight_decay": 0.0}
    )
    run = make_run(tcfg, [big])
    params = dict(run.raw_model.named_parameters())
    run.optimizer = torch.optim.SGD([{"params": list(params.values()), "peak_lr": 1.0}], lr=1.0)
    before = {k: v.detach().clone() for k, v in params.items()}
    micro = _split_rows(big, split)
    if not token_weighted:
        # the TRL #2604 bug: mean per micro-batch, averaged over micro-batches
        for m in micro:
            out = run.objective(run.model, m)
            (out.loss_sum / out.n_units / len(micro)).backward()
        run.optimizer.step()
    else:
        train_step(run, TrainState(total_steps=10), micro)
    return {k: before[k] - v.detach() for k, v in params.items()}


def test_gradients_do_not_depend_on_micro_batch_split() -> None:
    big = _cat(make_batches(2, rows=4, seq_len=16, seed=3))
    assert len({int(m.loss_mask.sum()) for m in _split_rows(big, 4)}) > 1, "uneven token counts"
    reference = _grads_after(1, big)
    for split in (2, 4, 8):
        got = _grads_after(split, big)
        for k in reference:
            torch.testing.assert_close(got[k], reference[k], rtol=1e-5, atol=1e-7)
    naive = _grads_after(4, big, token_weighted=False)
    diff = max(float((naive[k] - reference[k]).abs().max()) for k in reference)
    assert diff > 1e-4, "per-micro-batch averaging should differ (the test must be able to fail)"


def test_step_loss_is_token_mean_over_whole_step() -> None:
    batches = make_batches(3, rows=2, seq_len=16, seed=1)
    run = make_run(training_config(), batches)
    expected_sum, expected_n = 0.0, 0
    with torch.no_grad():
        for b in batches:
            out = PretrainObjective()(run.model, b)
            expected_sum += float(out.loss_sum)
            expected_n += out.n_units
    result = train_step(run, TrainState(total_steps=10), batches)
    assert result.n_units == expected_n
    assert result.loss == pytest.approx(expected_sum / expected_n, rel=1e-5)


class NanAt:
    """Pretraining objective whose loss is NaN on chosen calls."""

    name = "pretrain"

    def __init__(self, bad_calls: set[int]) -> None:
        self.inner = PretrainObjective()
        self.calls = 0
        self.bad = bad_calls

    def count(self, batch: Batch) -> int:
        return self.inner.count(batch)

    def __call__(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        out = self.inner(model, batch)
        self.calls += 1
        if self.calls - 1 in self.bad:
            out.loss_sum = out.loss_sum * float("nan")
        return out


def test_non_finite_step_is_skipped_and_weights_unchanged(
    batches: list[Batch], caplog: Any
) -> None:
    run = make_run(training_config(max_steps=3, max_bad_steps=3), batches)
    run.objective = NanAt({1})
    state = TrainState(total_steps=3)
    train_step(run, state, [batches[0]])
    before = {k: v.detach().clone() for k, v in run.raw_model.state_dict().items()}
    result = train_step(run, state, [batches[1]])
    assert result.skipped
    after = run.raw_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in run.raw_model.parameters())


def test_consecutive_non_finite_steps_stop_training(batches: list[Batch]) -> None:
    run = make_run(training_config(max_steps=10, max_bad_steps=3), batches)
    run.objective = NanAt({2, 3, 4})
    state = TrainState()
    with pytest.raises(TrainingDivergedError, match="3 consecutive non-finite"):
        fit(run, state)
    assert state.step == 5
    assert state.skipped_steps == 3


def test_isolated_non_finite_steps_do_not_stop(batches: list[Batch]) -> None:
    run = make_run(training_config(max_steps=8, max_bad_steps=2), batches)
    run.objective = NanAt({1, 3, 5})
    summary = fit(run, TrainState())
    assert summary["steps"] == 8
    assert summary["skipped_steps"] == 3


class OomOnce:
    name = "pretrain"

    def __init__(self, max_rows: int) -> None:
        self.inner = PretrainObjective()
        self.max_rows = max_rows

    def count(self, batch: Batch) -> int:
        return self.inner.count(batch)

    def __call__(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        if batch.input_ids.shape[0] > self.max_rows:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(model, batch)


def test_oom_names_micro_batch_to_try(batches: list[Batch]) -> None:
    run = make_run(training_config(max_steps=2), batches)
    run.objective = OomOnce(max_rows=1)
    with pytest.raises(OutOfMemoryAdviceError, match=r"micro_batch_size=2 .*grad_accum_steps=2"):
        fit(run, TrainState())


def test_oom_auto_halving_keeps_global_batch(batches: list[Batch]) -> None:
    run = make_run(training_config(max_steps=2, oom_auto_halve=True), batches)
    run.objective = OomOnce(max_rows=1)
    state = TrainState()
    summary = fit(run, state)
    assert state.micro_split == 4
    assert summary["steps"] == 2


def test_time_budget_calibrates_total_steps(batches: list[Batch]) -> None:
    run = make_run(training_config(max_steps=100000, max_time_s=5.0, calibration_steps=3), batches)
    state = TrainState()
    summary = fit(run, state)
    assert state.calibrated
    assert 3 <= state.total_steps < 100000
    assert summary["steps"] == state.total_steps or summary["stopped_by_time_budget"]


def test_ema_tracks_weights(batches: list[Batch]) -> None:
    run = make_run(training_config(max_steps=4, ema_decay=0.5), batches)
    assert run.ema is not None
    fit(run, TrainState())
    name = "layers.0.mlp.up_proj.weight"
    current = dict(run.raw_model.named_parameters())[name].detach()
    shadow = run.ema.shadow[name]
    assert not torch.equal(shadow, current)
    assert float((shadow - current).abs().max()) < 0.5


def fake_step_times(monkeypatch: pytest.MonkeyPatch, cost: Callable[[int], float]) -> None:
    """Make step ``i`` take ``cost(i)`` seconds of the loop's clock."""
    import zmaj_lm.training.loop as loop

    clock = {"t": 0.0}
    real_step = loop._step_with_oom_handling

    def timed_step(*args: Any) -> Any:
        result = real_step(*args)
        clock["t"] += cost(args[1].step)
        return result

    monkeypatch.setattr(loop.time, "perf_counter", lambda: clock["t"])
    monkeypatch.setattr(loop, "_step_with_oom_handling", timed_step)


@pytest.mark.parametrize(
    ("schedule", "extended"), [("wsd", True), ("constant", True), ("cosine", False)]
)
def test_slow_calibration_is_corrected_only_where_past_lrs_stay_the_same(
    batches: list[Batch], monkeypatch: pytest.MonkeyPatch, schedule: str, extended: bool
) -> None:
    fake_step_times(monkeypatch, lambda step: 0.4 if step < 3 else 0.1)  # busy, then quiet
    cfg = training_config(
        max_steps=1000,
        max_time_s=6.0,
        calibration_steps=3,
        schedule={"name": schedule, "warmup_steps": 2, "decay_fraction": 0.3},
    )
    state = TrainState()
    summary = fit(make_run(cfg, batches), state)
    assert state.train_time_s <= 6.0 * 1.15
    assert summary["steps"] == state.total_steps
    if extended:
        assert state.total_steps > 40  # 15 steps planned at 0.4 s/step; ~50 fit at 0.1 s/step
    else:
        assert state.total_steps <= 15  # as calibrated (or shortened), never extended


def test_slowed_steps_shorten_a_calibrated_run(
    batches: list[Batch], monkeypatch: pytest.MonkeyPatch
) -> None:
    import zmaj_lm.training.loop as loop

    clock = {"t": 0.0}
    step_cost = {"s": 0.1}

    def fake_time() -> float:
        return clock["t"]

    real_step = loop._step_with_oom_handling

    def slow_step(*args: Any) -> Any:
        result = real_step(*args)
        clock["t"] += step_cost["s"]
        if args[1].step >= 6:
            step_cost["s"] = 0.4  # the machine got busy
        return result

    monkeypatch.setattr(loop.time, "perf_counter", fake_time)
    monkeypatch.setattr(loop, "_step_with_oom_handling", slow_step)
    run = make_run(training_config(max_steps=1000, max_time_s=3.0, calibration_steps=3), batches)
    state = TrainState()
    summary = fit(run, state)
    assert not summary["stopped_by_time_budget"]
    assert summary["steps"] == state.total_steps
    assert state.train_time_s <= 3.0 * 1.15
    assert 10 < state.total_steps < 30
