"""The pretraining job end to end: data, model, loop, final evaluation, artefacts.

:func:`run_pretraining` is what ``scripts/pretrain.py`` calls (once per process under torchrun):

1. tokenizer and shards (rank 0 trains/prepares if needed, the others wait and load them);
2. model, data-parallel wrapping, optional ``torch.compile``, optimizer, EMA, loss scaler;
3. resume from ``OUT/checkpoints/latest`` when asked;
4. :func:`zmaj_lm.training.loop.fit`;
5. ``OUT/summary.json``, ``OUT/loss_curve.png`` and ``OUT/samples.txt`` on rank 0.

Validation figures include the loss by source (``val_loss_src_<name>``, names from the
manifest) in ``metrics.jsonl`` and ``summary.json``; the console summary line leaves them out
and names only the hardest and easiest source, since a corpus may have dozens.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from loguru import logger

from zmaj_lm.config.data import DataConfig
from zmaj_lm.config.loading import ConfigError
from zmaj_lm.config.root import Config
from zmaj_lm.data.loader import PackedLoader
from zmaj_lm.data.prepare import TOKENIZER_DIR, prepare_shards
from zmaj_lm.data.shards import Manifest, read_manifest, source_names_of
from zmaj_lm.data.sources import iter_texts
from zmaj_lm.data.tokenizer import TOKENIZER_FILE, Tokenizer, train_bpe
from zmaj_lm.eval.perplexity import source_digest
from zmaj_lm.models.transformer import Transformer
from zmaj_lm.training.distributed import (
    DistInfo,
    barrier,
    broadcast_object,
    init_distributed,
    wrap_model,
)
from zmaj_lm.training.ema import EMA
from zmaj_lm.training.loop import Run, TrainState, fit, resume
from zmaj_lm.training.metrics import MetricsLogger, plot_loss_curve
from zmaj_lm.training.objectives import build_objective
from zmaj_lm.training.optim import build_optimizer
from zmaj_lm.utils.flops import count_parameters
from zmaj_lm.utils.io import atomic_write_json
from zmaj_lm.utils.logging import setup_logging
from zmaj_lm.utils.seeding import seed_everything

_SOURCE_KEY = "val_loss_src_"


@dataclass
class PreparedData:
    """A tokenizer and the manifest of shards made with it."""

    tokenizer: Tokenizer
    manifest: Manifest
    data_dir: Path


def _get_tokenizer(cfg: DataConfig, data_dir: Path) -> Tokenizer:
    if cfg.tokenizer is not None:
        return Tokenizer.load(cfg.tokenizer)
    if cfg.tokenizer_repo is not None:
        return Tokenizer.from_hub(cfg.tokenizer_repo, cfg.tokenizer_revision)
    if (data_dir / TOKENIZER_DIR / TOKENIZER_FILE).is_file():
        return Tokenizer.load(data_dir / TOKENIZER_DIR)
    logger.info(f"training a {cfg.vocab_size}-token BPE tokenizer on {cfg.source.kind}")
    return train_bpe(
        iter_texts(cfg.source, "train"),
        cfg.vocab_size,
        cfg.special_tokens,
        max_bytes=cfg.tokenizer_train_bytes,
    )


def prepare_data(cfg: DataConfig, dist: DistInfo) -> PreparedData:
    """Tokenizer and shards of ``cfg`` (made by rank 0 when missing; idempotent)."""
    data_dir = Path(cfg.data_dir)
    error: str | None = None
    if dist.is_main:
        try:
            tokenizer = _get_tokenizer(cfg, data_dir)
            prepare_shards(
                cfg.source,
                tokenizer,
                data_dir,
                shard_tokens=cfg.shard_tokens,
                add_bos=cfg.add_bos,
                num_workers=cfg.num_workers,
            )
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if not dist.enabled:
                raise
    error = broadcast_object(error)
    if error is not None:
        raise RuntimeError(f"data preparation failed on rank 0: {error}")
    barrier()
    if not dist.is_main:
        tokenizer = (
            Tokenizer.load(data_dir / TOKENIZER_DIR)
            if cfg.tokenizer is None
            else (Tokenizer.load(cfg.tokenizer))
        )
    manifest = read_manifest(data_dir)
    if manifest is None or not manifest.complete:
        raise RuntimeError(f"{data_dir}: no complete manifest after preparation")
    return PreparedData(tokenizer=tokenizer, manifest=manifest, data_dir=data_dir)


def make_loader(
    cfg: DataConfig,
    prepared: PreparedData,
    dist: DistInfo,
    split: str,
    seed: int,
    batch_size: int | None = None,
) -> PackedLoader:
    """This rank's loader of ``split`` (training: infinite and shuffled; validation: one pass)."""
    train = split == "train"
    return PackedLoader(
        prepared.data_dir,
        seq_len=cfg.seq_len,
        batch_size=batch_size or cfg.batch_size,
        packing=cfg.packing,
        seed=seed,
        rank=dist.rank,
        world_size=dist.world_size,
        infinite=train,
        tokenizer_fingerprint=prepared.tokenizer.fingerprint,
        split=split,
        shuffle=cfg.shuffle and train,
        overflow=cfg.overflow,
        pack_window=cfg.pack_window,
    )


def validation_bytes_per_token(manifest: Manifest) -> float | None:
    """UTF-8 bytes per *supervised* token of the validation split (a document's first token is
    never a label, so a split of n documents has ``tokens - n`` of them)."""
    val = manifest.split("validation")
    supervised = val.num_tokens - val.num_documents
    if val.num_bytes <= 0 or supervised <= 0:
        return None
    return val.num_bytes / supervised


def check_compatible(config: Config, tokenizer: Tokenizer, source: str) -> None:
    """Model and data settings that must agree, as :class:`ConfigError` lines."""
    problems = []
    if tokenizer.vocab_size > config.model.vocab_size:
        problems.append(
            f"{source}: model.vocab_size: {config.model.vocab_size} is smaller than the "
            f"tokenizer's {tokenizer.vocab_size} ids"
        )
    if config.data.seq_len > config.model.max_seq_len:
        problems.append(
            f"{source}: data.seq_len: {config.data.seq_len} exceeds model.max_seq_len "
            f"{config.model.max_seq_len}"
        )
    if problems:
        raise ConfigError(problems)


def build_run(
    config: Config,
    prepared: PreparedData,
    dist: DistInfo,
    out_dir: Path | None,
) -> Run:
    """Model, optimizer, loaders and sinks for ``config`` on this rank (seeded)."""
    tcfg = config.training
    if tcfg.num_threads is not None:
        torch.set_num_threads(tcfg.num_threads)
    seed_everything(tcfg.seed)
    model = Transformer(config.model).to(dist.device)
    logger.info(f"model: {count_parameters(config.model) / 1e6:.2f}M parameters")
    wrapped = wrap_model(model, tcfg.distributed, dist)
    optimizer = build_optimizer(model, tcfg.optimizer)
    ema = EMA(model, tcfg.ema_decay) if tcfg.ema_decay is not None else None
    if tcfg.compile:
        wrapped = torch.compile(wrapped)  # type: ignore[assignment]
    scaler = torch.amp.GradScaler(dist.device.type) if tcfg.precision == "fp16" else None
    train_loader = make_loader(config.data, prepared, dist, "train", config.data.seed)

    def val_batches() -> PackedLoader:
        return make_loader(
            config.data, prepared, dist, "validation", config.data.seed, tcfg.eval.batch_size
        )

    has_val = prepared.manifest.split("validation").num_documents >= dist.world_size
    metrics = None
    if dist.is_main and out_dir is not None:
        metrics = MetricsLogger(out_dir, tcfg.logging, config.model_dump(mode="json"))
    return Run(
        cfg=tcfg,
        model_cfg=config.model,
        model=wrapped,
        objective=build_objective(tcfg.objective),
        optimizer=optimizer,
        train_loader=train_loader,
        dist=dist,
        out_dir=out_dir,
        config_dict=config.model_dump(mode="json"),
        val_batches=val_batches if has_val else None,
        bytes_per_token=validation_bytes_per_token(prepared.manifest),
        source_names=source_names_of(prepared.manifest),
        tokenizer=prepared.tokenizer,
        metrics=metrics,
        scaler=scaler,
        ema=ema,
        micro_batch_size=config.data.batch_size,
        seq_len=config.data.seq_len,
        loader_positions=True,
    )


def run_pretraining(
    config: Config,
    out_dir: Path,
    *,
    resume_run: bool = False,
    source: str = "<config>",
    log_level: str = "INFO",
) -> dict[str, Any]:
    """The whole job (see the module docstring). Returns the summary written to summary.json."""
    started = time.perf_counter()
    dist = init_distributed(config.training.device)
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        setup_logging(log_level, out_dir / "train.log")
    else:
        setup_logging("WARNING")
    if config.training.num_threads is not None:
        torch.set_num_threads(config.training.num_threads)
    logger.info(f"output: {out_dir}  device: {dist.device}  world size: {dist.world_size}")
    t0 = time.perf_counter()
    prepared = prepare_data(config.data, dist)
    data_s = time.perf_counter() - t0
    logger.info(f"data ready in {data_s:.1f}s: {prepared.data_dir}")
    check_compatible(config, prepared.tokenizer, source)
    run = build_run(config, prepared, dist, out_dir)
    state = TrainState()
    if resume_run:
        if resume(run, state) is None:
            logger.info("--resume: no checkpoint yet, starting from scratch")
            if run.metrics is not None:
                run.metrics.truncate_after(0)
    elif run.metrics is not None and run.metrics.path.exists():
        run.metrics.path.unlink()
    summary = fit(run, state)
    summary["data_dir"] = str(prepared.data_dir)
    summary["data_prep_s"] = round(data_s, 2)
    summary["wall_time_s"] = round(time.perf_counter() - started, 2)
    summary["parameters"] = count_parameters(config.model)
    if dist.is_main:
        if run.metrics is not None:
            run.metrics.log(
                state.step, "summary", {k: v for k, v in summary.items() if k != "samples"}
            )
            run.metrics.close()
            if config.training.logging.plot:
                plot_loss_curve(run.metrics.path, out_dir / "loss_curve.png")
        atomic_write_json(out_dir / "summary.json", summary)
        by_source = {
            k.removeprefix(_SOURCE_KEY): v for k, v in summary.items() if k.startswith(_SOURCE_KEY)
        }
        brief = {
            k: v for k, v in summary.items() if k != "samples" and not k.startswith(_SOURCE_KEY)
        }
        digest = source_digest(by_source)
        logger.info(
            "summary: "
            + json.dumps(brief, default=str)
            + (f"; validation loss by source: {digest} (all in summary.json)" if digest else "")
        )
    return summary
