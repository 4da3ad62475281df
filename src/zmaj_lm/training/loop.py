"""The fit loop: plain functions over a :class:`TrainState` that is saved as-is.

One optimizer step (:func:`train_step`) reads ``grad_accum_steps`` micro-batches on every rank,
agrees on the total number of supervised units of the whole step first (an all-reduce), then
backpropagates ``loss_sum * world_size / total`` for each micro-batch, so the accumulated (and
DDP-averaged) gradient is the gradient of the token-mean loss of the whole step, whatever its
split into micro-batches and ranks. Then: unscale (fp16), clip, skip if anything is non-finite,
set the scheduled lr, step, update the EMA.

:func:`fit` runs steps until ``total_steps`` (fixed by a short calibration when the run has a time
budget), logging, evaluating and checkpointing on the configured cadence. Checkpoints hold every
RNG and every rank's data-loader position, so a resumed run is bitwise identical on CPU.
"""

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from loguru import logger
from torch import Tensor, nn

from zmaj_lm.config.generation import SamplingConfig
from zmaj_lm.config.model import ModelConfig
from zmaj_lm.config.training import TrainingConfig
from zmaj_lm.data.batch import Batch
from zmaj_lm.eval.perplexity import EvalResult, document_lengths, evaluate, source_digest
from zmaj_lm.models.generation import generate
from zmaj_lm.models.transformer import Transformer
from zmaj_lm.training.checkpoint import (
    CheckpointError,
    clean_stale,
    full_model_state,
    latest_checkpoint,
    load_optimizer_state,
    load_weights,
    optimizer_state,
    read_trainer_state,
    write_checkpoint,
)
from zmaj_lm.training.distributed import (
    DistInfo,
    all_gather_objects,
    barrier,
    broadcast_object,
    is_fsdp,
    set_grad_sync,
    unwrap,
)
from zmaj_lm.training.ema import EMA
from zmaj_lm.training.metrics import MetricsLogger, memory_gib, peak_flops
from zmaj_lm.training.objectives import Objective
from zmaj_lm.training.optim import set_lr
from zmaj_lm.training.schedule import lr_multiplier
from zmaj_lm.utils.distributed import all_reduce_sum
from zmaj_lm.utils.flops import flops_per_token
from zmaj_lm.utils.io import atomic_write_text
from zmaj_lm.utils.seeding import rng_state, set_rng_state

STATE_VERSION = 1


class TrainingDivergedError(RuntimeError):
    """Too many consecutive non-finite steps; the last good checkpoint is left intact."""


class OutOfMemoryAdviceError(RuntimeError):
    """CUDA ran out of memory; the message names the micro-batch size to try."""


class BatchSource(Protocol):
    """A resumable stream of batches (the data pipeline's ``PackedLoader``)."""

    def __iter__(self) -> Iterator[Batch]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainState:
    """Counters of the loop; with the model, optimizer, RNGs and loader this is the whole run."""

    step: int = 0
    """Optimizer steps taken (skipped non-finite steps included: their data is consumed)."""
    total_steps: int = 0
    """Length of the run, fixed at start or after calibration of a time budget."""
    calibrated: bool = False
    """Whether a time-budgeted run has fixed ``total_steps`` already."""
    tokens_seen: int = 0
    """Supervised tokens consumed, over all ranks."""
    consecutive_bad: int = 0
    """Non-finite steps in a row (the run stops at ``max_bad_steps``)."""
    skipped_steps: int = 0
    """Non-finite steps skipped so far."""
    train_time_s: float = 0.0
    """Seconds spent in optimizer steps (evaluation and checkpointing excluded)."""
    micro_split: int = 1
    """Each loaded micro-batch is split into this many row chunks (grows on CUDA OOM)."""

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if hasattr(self, key):
                setattr(self, key, value)


@dataclass
class StepResult:
    """What one optimizer step did; ``loss`` is the token-mean over the whole step."""

    loss: float
    grad_norm: float
    n_units: int
    lr: float
    skipped: bool
    metrics: dict[str, float] = field(default_factory=dict)
    tokens_in_rows: int = 0
    attn_seq_len: float = 0.0


@dataclass
class Run:
    """Everything the loop touches. Built by :mod:`zmaj_lm.training.pretrain` (or a test)."""

    cfg: TrainingConfig
    model_cfg: ModelConfig
    model: nn.Module
    """The module to call: possibly DDP/FSDP-wrapped and compiled."""
    objective: Objective
    optimizer: torch.optim.Optimizer
    train_loader: BatchSource
    dist: DistInfo
    out_dir: Path | None = None
    config_dict: dict[str, Any] = field(default_factory=dict)
    """The run's resolved config, stored in every checkpoint as ``config.yaml``."""
    val_batches: Callable[[], Iterable[Batch]] | None = None
    """Fresh iterable over this rank's validation batches."""
    bytes_per_token: float | None = None
    """UTF-8 bytes per token of the validation split (for bits per byte)."""
    source_names: list[str] | None = None
    """Names of the ids in ``batch.source_ids`` (the manifest's), for the loss by source."""
    tokenizer: Any | None = None
    metrics: MetricsLogger | None = None
    scaler: torch.amp.GradScaler | None = None
    ema: EMA | None = None
    micro_batch_size: int = 1
    """Rows per loaded micro-batch (for out-of-memory advice)."""
    seq_len: int = 0
    """Tokens per row (for MFU); 0 uses ``model_cfg.max_seq_len``."""
    loader_positions: bool = False
    """The loader exposes ``epoch``/``row``/``plan`` (PackedLoader), so a skipped batch can be
    traced to corpus document indices."""
    _iterator: Iterator[Batch] | None = None

    @property
    def raw_model(self) -> nn.Module:
        return unwrap(self.model)

    @property
    def ckpt_root(self) -> Path | None:
        return self.out_dir / "checkpoints" if self.out_dir is not None else None

    def autocast(self) -> AbstractContextManager[None]:
        precision = self.cfg.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(self.dist.device.type, dtype=dtype)

    def next_batch(self) -> Batch:
        if self._iterator is None:
            self._iterator = iter(self.train_loader)
        return next(self._iterator)


def _split_rows(batch: Batch, parts: int) -> list[Batch]:
    if parts <= 1:
        return [batch]
    B = batch.input_ids.shape[0]
    bounds = [round(i * B / parts) for i in range(parts + 1)]
    return [
        Batch(
            input_ids=batch.input_ids[a:b],
            labels=batch.labels[a:b],
            document_ids=batch.document_ids[a:b],
            position_ids=batch.position_ids[a:b],
            loss_mask=batch.loss_mask[a:b],
            source_ids=batch.source_ids[a:b] if batch.source_ids is not None else None,
        )
        for a, b in itertools.pairwise(bounds)
        if b > a
    ]


def _grad_norm(model: nn.Module, max_norm: float | None) -> Tensor:
    """Clip the global gradient norm (if ``max_norm``) and return the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm is not None else math.inf)
    from torch.distributed.tensor import DTensor

    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def train_step(run: Run, state: TrainState, micro_batches: list[Batch]) -> StepResult:
    """One optimizer step over this rank's ``micro_batches`` (token-weighted across all of them
    and all ranks). Leaves the gradients cleared."""
    model, opt, device = run.model, run.optimizer, run.dist.device
    chunks = [c for b in micro_batches for c in _split_rows(b, state.micro_split)]
    local_units = sum(run.objective.count(c) for c in chunks)
    total = int(all_reduce_sum(torch.tensor(float(local_units), device=device)).item())
    scale = run.dist.world_size / max(total, 1)
    loss_acc = torch.zeros((), dtype=torch.float64, device=device)
    metric_acc: dict[str, Tensor] = {}
    for i, chunk in enumerate(chunks):
        set_grad_sync(model, i == len(chunks) - 1)
        chunk = chunk.to(device, non_blocking=True)
        with run.autocast():
            out = run.objective(model, chunk)
        loss = out.loss_sum * scale
        if run.scaler is not None:
            run.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        else:
            loss.backward()  # type: ignore[no-untyped-call]
        loss_acc += out.loss_sum.detach().double()
        for k, v in out.metrics.items():
            metric_acc[k] = metric_acc.get(k, torch.zeros((), dtype=torch.float64, device=device))
            metric_acc[k] = metric_acc[k] + v.double()
    names = sorted(metric_acc)
    sums = all_reduce_sum(torch.stack([loss_acc, *(metric_acc[k] for k in names)]))
    step_loss = float(sums[0]) / max(total, 1)
    metrics = {k: float(sums[1 + i]) / max(total, 1) for i, k in enumerate(names)}
    if run.scaler is not None:
        run.scaler.unscale_(opt)
    grad_norm = float(_grad_norm(model, run.cfg.grad_clip))
    mult = lr_multiplier(run.cfg.schedule, state.step, state.total_steps)
    set_lr(opt, mult)
    lr = float(opt.param_groups[0]["lr"])
    grads_ok = math.isfinite(grad_norm) or run.scaler is not None
    rows_tokens = sum(int(b.input_ids.numel()) for b in micro_batches)
    attn_len = _effective_seq_len(micro_batches)
    if not (math.isfinite(step_loss) and grads_ok):
        opt.zero_grad(set_to_none=True)
        if run.scaler is not None:
            run.scaler.update()
        _log_bad_batch(state.step, step_loss, grad_norm, micro_batches)
        return StepResult(step_loss, grad_norm, total, lr, True, metrics, rows_tokens, attn_len)
    if run.scaler is not None:
        run.scaler.step(opt)
        run.scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.update()
    return StepResult(step_loss, grad_norm, total, lr, False, metrics, rows_tokens, attn_len)


def _effective_seq_len(batches: list[Batch]) -> float:
    """Σℓᵢ²/T averaged over rows: the attention length a document-masked row really costs."""
    total, rows = 0.0, 0
    for b in batches:
        T = b.document_ids.shape[1]
        lengths = document_lengths(b.document_ids).double()  # (B, T), each doc counted ℓ times
        total += float((lengths.sum(dim=1) / T).sum())
        rows += b.document_ids.shape[0]
    return total / max(rows, 1)


def _loader_position(run: Run) -> tuple[int, int] | None:
    if not run.loader_positions:
        return None
    loader: Any = run.train_loader
    return int(loader.epoch), int(loader.row)


def _corpus_documents(run: Run, position: tuple[int, int], rows: int) -> list[tuple[int, int]]:
    """(epoch, document index) of every segment in ``rows`` rows read from ``position``."""
    loader: Any = run.train_loader
    epoch, row = position
    docs: list[tuple[int, int]] = []
    for _ in range(rows):
        plan = loader.plan(epoch)
        if row >= plan.num_rows:
            epoch, row = epoch + 1, 0
            plan = loader.plan(epoch)
        docs.extend((epoch, int(seg[0])) for seg in plan.row(row))
        row += 1
    return sorted(set(docs))


def _log_bad_batch(step: int, loss: float, grad_norm: float, batches: list[Batch]) -> None:
    docs = sorted(
        {int(d) for b in batches for d in torch.unique(b.document_ids).tolist() if d >= 0}
    )
    shown = docs[:64]
    more = f" (+{len(docs) - len(shown)} more)" if len(docs) > len(shown) else ""
    logger.warning(
        f"step {step}: non-finite loss {loss} / grad norm {grad_norm}; step skipped; "
        f"row-local document ids: {shown}{more}"
    )


# ---------------------------------------------------------------------------------------------
# Checkpointing


def save(run: Run, state: TrainState) -> Path | None:
    """Save a checkpoint of the current step (collective; rank 0 writes)."""
    root = run.ckpt_root
    if root is None:
        return None
    fsdp = is_fsdp(run.model)
    model_state = full_model_state(run.model) if fsdp else None
    opt_state = optimizer_state(run.model, run.optimizer)
    ema_state = run.ema.state_dict() if run.ema is not None else None
    loaders = all_gather_objects(run.train_loader.state_dict())
    rngs = all_gather_objects(rng_state())
    error: str | None = None
    path: Path | None = None
    if run.dist.is_main:
        trainer_state = {
            "version": STATE_VERSION,
            "trainer": state.state_dict(),
            "optimizer": opt_state,
            "scaler": run.scaler.state_dict() if run.scaler is not None else None,
            "ema": ema_state,
            "rng": rngs,
            "loader": loaders,
            "world_size": run.dist.world_size,
        }
        try:
            path = write_checkpoint(
                root,
                state.step,
                model=run.raw_model,
                model_state=model_state,
                config=run.config_dict,
                trainer_state=trainer_state,
                tokenizer=run.tokenizer,
                keep_last=run.cfg.checkpoint.keep_last,
            )
            logger.info(f"saved checkpoint {path}")
        except CheckpointError as exc:
            error = str(exc)
    error = broadcast_object(error)
    if error is not None:
        raise CheckpointError(error)
    return path


def resume(run: Run, state: TrainState, ckpt_dir: Path | None = None) -> Path | None:
    """Restore everything from ``ckpt_dir`` (default: the run's latest checkpoint).

    Returns the directory used, or ``None`` when there is nothing to resume from.
    """
    root = run.ckpt_root
    if ckpt_dir is None:
        if root is None:
            return None
        if run.dist.is_main:
            clean_stale(root)
        barrier()
        ckpt_dir = latest_checkpoint(root)
        if ckpt_dir is None:
            return None
    saved = read_trainer_state(ckpt_dir)
    if saved.get("version") != STATE_VERSION:
        raise CheckpointError(f"{ckpt_dir}: trainer state version {saved.get('version')} unknown")
    if saved["world_size"] != run.dist.world_size:
        raise CheckpointError(
            f"{ckpt_dir}: saved with {saved['world_size']} processes, resuming with "
            f"{run.dist.world_size}; data positions cannot be mapped"
        )
    load_weights(run.model, ckpt_dir)
    load_optimizer_state(run.model, run.optimizer, saved["optimizer"])
    if run.scaler is not None and saved.get("scaler") is not None:
        run.scaler.load_state_dict(saved["scaler"])
    if run.ema is not None:
        if saved.get("ema") is not None:
            run.ema.load_state_dict(saved["ema"])
        else:
            logger.warning(f"{ckpt_dir}: no EMA saved; starting the average from these weights")
            run.ema = EMA(run.raw_model, run.ema.decay)
    elif saved.get("ema") is not None:
        logger.info(f"{ckpt_dir}: EMA weights present but training.ema_decay is unset; ignored")
    state.load_state_dict(saved["trainer"])
    if not state.calibrated:
        state.total_steps = run.cfg.max_steps
    run.train_loader.load_state_dict(saved["loader"][run.dist.rank])
    run._iterator = None
    set_rng_state(saved["rng"][run.dist.rank])
    if run.metrics is not None:
        run.metrics.truncate_after(state.step)
    logger.info(f"resumed from {ckpt_dir} at step {state.step}")
    return ckpt_dir


# ---------------------------------------------------------------------------------------------
# Evaluation and samples


def run_eval(run: Run, max_batches: int | None) -> EvalResult | None:
    """Validation figures of the current (or EMA) weights, over all ranks."""
    if run.val_batches is None:
        return None
    ctx: AbstractContextManager[None] = contextlib.nullcontext()
    if run.ema is not None and run.cfg.eval.use_ema:
        ctx = run.ema.swapped()
    with ctx:
        return evaluate(
            run.model,
            run.val_batches(),
            device=run.dist.device,
            max_batches=max_batches,
            bytes_per_token=run.bytes_per_token,
            length_buckets=run.cfg.eval.length_buckets,
            source_names=run.source_names,
            autocast=run.autocast,
        )


def sample_texts(run: Run, step: int) -> list[dict[str, str]]:
    """A few generations from the eval prompts (rank 0, seeded by ``step``; none under FSDP)."""
    ecfg = run.cfg.eval
    tok = run.tokenizer
    if tok is None or ecfg.num_samples == 0 or is_fsdp(run.model) or not run.dist.is_main:
        return []
    raw = run.raw_model
    if not isinstance(raw, Transformer):
        return []
    prompts = [ecfg.sample_prompts[i % len(ecfg.sample_prompts)] for i in range(ecfg.num_samples)]
    bos = getattr(tok, "bos_id", None)
    encoded = [([bos] if bos is not None else []) + list(tok.encode(p)) for p in prompts]
    max_new = min(ecfg.sample_max_new_tokens, raw.config.max_seq_len - max(map(len, encoded)))
    eos = getattr(tok, "eos_id", None)
    sampling = SamplingConfig(
        max_new_tokens=max(max_new, 1),
        temperature=ecfg.sample_temperature,
        top_k=50 if ecfg.sample_temperature > 0 else None,
        stop_token_ids=[eos] if eos is not None else [],
    )
    gen = torch.Generator(device=run.dist.device).manual_seed(step)
    ctx: AbstractContextManager[None] = contextlib.nullcontext()
    if run.ema is not None and ecfg.use_ema:
        ctx = run.ema.swapped()
    with ctx:
        outs = generate(raw, encoded, sampling, generator=gen)
    return [{"prompt": p, "text": tok.decode(o)} for p, o in zip(prompts, outs, strict=True)]


# ---------------------------------------------------------------------------------------------
# The loop


def _calibrate(run: Run, state: TrainState, step_times: list[float]) -> None:
    """Fix ``total_steps`` of a time-budgeted run from the measured step time."""
    budget = run.cfg.max_time_s
    assert budget is not None
    timed = step_times[1:] or step_times
    per_step = sorted(timed)[len(timed) // 2]
    per_step = float(broadcast_object(per_step))
    remaining = budget - state.train_time_s
    fit_steps = state.step + max(int(remaining / per_step), 1)
    state.total_steps = min(run.cfg.max_steps, fit_steps)
    state.calibrated = True
    logger.info(
        f"time budget {budget:.0f}s: {per_step * 1000:.0f} ms/step -> {state.total_steps} steps"
    )


def _fit_to_budget(run: Run, state: TrainState, recent: list[float]) -> None:
    """Re-plan a calibrated run from its recent step times. A run whose steps became slower (a
    busy machine) is shortened, so that it still ends inside its budget with its learning rate
    decayed instead of being cut off mid-run. A run whose calibration was slowed down is extended
    while that changes none of the learning rates already applied (the stable phase of ``wsd`` or
    ``constant``), so one noisy calibration does not cost the rest of the budget."""
    budget = run.cfg.max_time_s
    assert budget is not None
    per_step = float(broadcast_object(sorted(recent)[len(recent) // 2]))
    fit_steps = state.step + max(int((budget - state.train_time_s) / per_step), 1)
    fit_steps = min(fit_steps, run.cfg.max_steps)
    if fit_steps < state.total_steps:
        logger.warning(
            f"steps slowed to {per_step * 1000:.0f} ms: run shortened from {state.total_steps} "
            f"to {fit_steps} steps to fit the {budget:.0f}s budget"
        )
        state.total_steps = fit_steps
    elif fit_steps > 1.05 * state.total_steps and all(
        lr_multiplier(run.cfg.schedule, s, state.total_steps)
        == lr_multiplier(run.cfg.schedule, s, fit_steps)
        for s in range(state.step + 1)
    ):
        logger.info(
            f"steps sped up to {per_step * 1000:.0f} ms: run extended from {state.total_steps} "
            f"to {fit_steps} steps within the {budget:.0f}s budget"
        )
        state.total_steps = fit_steps


def _train_metrics(run: Run, result: StepResult, dt: float, state: TrainState) -> dict[str, Any]:
    world = run.dist.world_size
    tokens_per_s = result.tokens_in_rows * world / dt if dt > 0 else 0.0
    values: dict[str, Any] = {
        "loss": result.loss,
        "lr": result.lr,
        "grad_norm": result.grad_norm,
        "tokens_per_s": tokens_per_s,
        "step_time_s": dt,
        "tokens_seen": state.tokens_seen,
        "memory_gib": memory_gib(run.dist.device),
        **result.metrics,
    }
    peak = peak_flops(run.dist.device, run.cfg.peak_flops)
    if peak is not None:
        seq_len = run.seq_len or run.model_cfg.max_seq_len
        per_device = tokens_per_s / world
        values["mfu"] = per_device * flops_per_token(run.model_cfg, seq_len) / peak
        values["mfu_effective"] = (
            per_device * flops_per_token(run.model_cfg, result.attn_seq_len) / peak
        )
    if run.scaler is not None:
        values["loss_scale"] = float(run.scaler.get_scale())
    return values


def fit(run: Run, state: TrainState) -> dict[str, Any]:
    """Train until ``state.total_steps`` (or the time budget), then save and evaluate.

    Returns the summary (final training loss, validation figures, steps, time) that
    ``OUT/summary.json`` holds.
    """
    cfg = run.cfg
    if state.total_steps == 0:
        state.total_steps = cfg.max_steps
    bar: Any = None
    if run.dist.is_main and cfg.logging.progress_bar:
        from tqdm import tqdm

        bar = tqdm(total=state.total_steps, initial=state.step, desc="train", unit="step")
    step_times: list[float] = []
    last_loss = math.nan
    last_saved = state.step if state.step > 0 else -1
    losses_window: list[float] = []
    stopped_by_time = False
    try:
        while state.step < state.total_steps:
            position = _loader_position(run)
            t0 = time.perf_counter()
            micro = [run.next_batch() for _ in range(cfg.grad_accum_steps)]
            result = _step_with_oom_handling(run, state, micro)
            if result.skipped and position is not None:
                rows = sum(b.input_ids.shape[0] for b in micro)
                logger.warning(
                    f"step {state.step}: corpus documents of the skipped batch "
                    f"(loader epoch, index): {_corpus_documents(run, position, rows)}"
                )
            if run.dist.device.type == "cuda":
                torch.cuda.synchronize(run.dist.device)
            dt = time.perf_counter() - t0
            state.train_time_s += dt
            state.step += 1
            state.tokens_seen += result.n_units
            if result.skipped:
                state.consecutive_bad += 1
                state.skipped_steps += 1
                if state.consecutive_bad >= cfg.max_bad_steps:
                    last = latest_checkpoint(run.ckpt_root) if run.ckpt_root else None
                    raise TrainingDivergedError(
                        f"{state.consecutive_bad} consecutive non-finite steps (last at step "
                        f"{state.step}); stopping. Last good checkpoint: {last or 'none'}"
                    )
            else:
                state.consecutive_bad = 0
                last_loss = result.loss
                losses_window.append(result.loss)
            if cfg.max_time_s is not None:
                step_times.append(dt)
                window = step_times[-cfg.calibration_steps :]
                if not state.calibrated and (
                    len(step_times) >= cfg.calibration_steps or state.step >= state.total_steps
                ):
                    _calibrate(run, state, step_times)
                elif state.calibrated:
                    _fit_to_budget(run, state, window)
                if bar is not None and bar.total != state.total_steps:
                    bar.total = state.total_steps
                    bar.refresh()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{result.loss:.3f}", lr=f"{result.lr:.2e}")
            if state.step % cfg.logging.every == 0 or state.step == state.total_steps:
                values = _train_metrics(run, result, dt, state)
                if losses_window:
                    values["loss"] = sum(losses_window) / len(losses_window)
                losses_window = []
                if run.metrics is not None:
                    run.metrics.log(state.step, "train", values)
                if run.dist.is_main:
                    # with a progress bar on the console, step lines go to train.log only
                    logger.log(
                        "INFO" if bar is None else "DEBUG",
                        f"step {state.step}/{state.total_steps} loss {values['loss']:.4f} "
                        f"lr {result.lr:.2e} grad {result.grad_norm:.2f} "
                        f"{values['tokens_per_s']:.0f} tok/s",
                    )
            done = state.step >= state.total_steps
            if cfg.max_time_s is not None and state.train_time_s > 1.15 * cfg.max_time_s:
                logger.warning(f"time budget exceeded after {state.step} steps; stopping")
                stopped_by_time = done = True
            if cfg.eval.every and state.step % cfg.eval.every == 0 and not done:
                _periodic_eval(run, state)
            every = cfg.save_every
            if every and state.step % every == 0 and not done:
                save(run, state)
                last_saved = state.step
            if done:
                break
    finally:
        if bar is not None:
            bar.close()
    if cfg.checkpoint.save_final and last_saved != state.step:
        save(run, state)
    final = run_eval(run, max_batches=None)
    summary: dict[str, Any] = {
        "steps": state.step,
        "total_steps": state.total_steps,
        "tokens_seen": state.tokens_seen,
        "skipped_steps": state.skipped_steps,
        "train_time_s": round(state.train_time_s, 2),
        "final_train_loss": last_loss,
        "stopped_by_time_budget": stopped_by_time,
    }
    if final is not None:
        summary.update(final.as_dict())
        if run.metrics is not None:
            run.metrics.log(state.step, "eval", final.as_dict())
    samples = sample_texts(run, state.step)
    summary["samples"] = samples
    if run.dist.is_main and run.out_dir is not None and samples:
        text = "".join(f"### {s['prompt']!r}\n{s['prompt']}{s['text']}\n\n" for s in samples)
        atomic_write_text(run.out_dir / "samples.txt", text)
    return summary


def _periodic_eval(run: Run, state: TrainState) -> None:
    result = run_eval(run, max_batches=run.cfg.eval.max_batches)
    if result is None:
        return
    values: dict[str, Any] = dict(result.as_dict())
    samples = sample_texts(run, state.step)
    if samples:
        values["samples"] = samples
    if run.metrics is not None:
        run.metrics.log(state.step, "eval", values)
    if run.dist.is_main:
        bpb = f" bpb {result.bits_per_byte:.3f}" if result.bits_per_byte is not None else ""
        digest = source_digest(result.by_source)
        logger.info(
            f"step {state.step}: val loss {result.loss:.4f} ppl {result.perplexity:.1f}{bpb}"
            + (f" | {digest}" if digest else "")
        )
        for s in samples:
            logger.info(f"sample {s['prompt']!r} -> {s['text']!r}")


def _step_with_oom_handling(run: Run, state: TrainState, micro: list[Batch]) -> StepResult:
    """:func:`train_step`, turning CUDA OOM into advice or (if enabled) a halved micro-batch."""
    while True:
        try:
            return train_step(run, state, micro)
        except torch.OutOfMemoryError as exc:
            run.optimizer.zero_grad(set_to_none=True)
            rows = max(run.micro_batch_size // state.micro_split, 1)
            if run.cfg.oom_auto_halve and rows > 1:
                state.micro_split *= 2
                logger.warning(
                    f"out of memory at {rows} rows per micro-batch; retrying with {rows // 2} "
                    f"(split {state.micro_split}, same global batch)"
                )
                if run.dist.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            accum = run.cfg.grad_accum_steps * state.micro_split
            raise OutOfMemoryAdviceError(
                f"out of memory with {rows} rows per micro-batch; try "
                f"training.micro_batch_size={max(rows // 2, 1)} "
                f"training.grad_accum_steps={accum * 2} (same global batch), or "
                "training.oom_auto_halve=true"
            ) from exc
