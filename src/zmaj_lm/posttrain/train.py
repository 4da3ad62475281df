"""The SFT, DPO and GRPO jobs: each builds an objective and a batch source and calls the one fit
loop (:func:`zmaj_lm.training.loop.fit`), then scores the result on held-out data and saves it.

Every job reads an ``--init`` checkpoint (ours: ``model.safetensors`` + ``config.yaml`` and a
tokenizer, as pretraining or ``convert.py from-hf`` write them) and writes into ``OUT``:

* ``checkpoints/`` the loop's resumable checkpoints (LoRA runs hold the adapters there too),
* ``model/`` the final weights (adapters merged) with the tokenizer: the next stage's ``--init``,
* ``adapter/`` (LoRA only) the adapter alone in PEFT's layout, for the HF export of the base,
* ``hf/`` (when asked) ``model/`` converted to transformers' layout,
* ``metrics.jsonl``, ``summary.json``.

Under ``torchrun --nproc_per_node=N`` SFT, DPO and GRPO train data-parallel
(``training.distributed: ddp``): every rank reads (GRPO: rolls out) a disjoint share of each
global micro-batch (``loader.batch_size`` per rank), the loop's token-weighted all-reduce makes
the step that of one process with the global batch, GRPO's rollout statistics are summed over
ranks, and rank 0 alone logs to files, writes metrics, checkpoints, the reference log-probs
cache, evaluates and exports. FSDP is refused (:func:`check_world`).
"""

import copy
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from loguru import logger
from safetensors.torch import load_file, save_file

from zmaj_lm.config.loading import ConfigError
from zmaj_lm.config.lora import LoRAConfig
from zmaj_lm.config.posttrain import DPOConfig, GRPOConfig, SFTConfig
from zmaj_lm.config.training import TrainingConfig
from zmaj_lm.data.tokenizer import Tokenizer
from zmaj_lm.interop.convert import convert_to_hf
from zmaj_lm.models.io import load_model, save_model
from zmaj_lm.models.lora import apply_lora, lora_state_dict, merge_lora
from zmaj_lm.models.transformer import Transformer
from zmaj_lm.posttrain.batches import (
    PreferenceBatch,
    SequenceExample,
    SFTLoader,
    pad_sequences,
    rank_share,
    truncate,
)
from zmaj_lm.posttrain.chat import ChatFormat
from zmaj_lm.posttrain.evaluate import (
    completion_logps,
    exact_match_accuracy,
    pair_sequences,
    preference_accuracy,
    sampled_accuracy,
    sft_validation_loss,
)
from zmaj_lm.posttrain.examples import (
    ExampleError,
    PreferenceExample,
    PromptExample,
    SFTExample,
    preference_examples,
    prompt_examples,
    sft_examples,
    take,
)
from zmaj_lm.posttrain.export import copy_tokenizer, family_of, save_peft_adapter
from zmaj_lm.posttrain.objectives import DPOObjective, GRPOObjective, SFTObjective
from zmaj_lm.posttrain.rollout import RolloutSource, RolloutStats
from zmaj_lm.training.distributed import (
    DistInfo,
    broadcast_object,
    init_distributed,
    wrap_model,
)
from zmaj_lm.training.loop import BatchSource, Run, TrainState, fit, resume
from zmaj_lm.training.metrics import MetricsLogger
from zmaj_lm.training.objectives import Objective
from zmaj_lm.training.optim import build_optimizer
from zmaj_lm.utils.distributed import all_reduce_sum
from zmaj_lm.utils.io import atomic_write_json
from zmaj_lm.utils.logging import setup_logging
from zmaj_lm.utils.seeding import seed_everything

REF_LOGPS_NAME = "ref_logps.safetensors"


@dataclass
class Init:
    """The checkpoint a stage starts from."""

    path: Path
    model: Transformer
    tokenizer: Tokenizer
    tokenizer_dir: Path


def load_init(path: Path, device: torch.device | str = "cpu") -> Init:
    """Model and tokenizer of checkpoint ``path`` (tokenizer in ``path/tokenizer`` or ``path``)."""
    model = load_model(path, device=device)
    tok_dir = path / "tokenizer" if (path / "tokenizer" / "tokenizer.json").is_file() else path
    return Init(path=path, model=model, tokenizer=Tokenizer.load(tok_dir), tokenizer_dir=tok_dir)


def chat_format(init: Init, cfg: Any) -> ChatFormat:
    return ChatFormat.from_config(init.tokenizer, cfg, init.tokenizer_dir)


def pad_id(tokenizer: Tokenizer) -> int:
    return tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id


def check_world(stage: str, tcfg: TrainingConfig, dist: DistInfo) -> None:
    """Refuse what post-training cannot do with several processes (same answer on every rank)."""
    if not dist.enabled:
        return
    if tcfg.distributed != "ddp":
        raise ConfigError(
            [
                f"training.distributed: {tcfg.distributed} is not supported for post-training "
                "(evaluation, generation and export run on rank 0 alone, which needs whole "
                "weights on every rank); use ddp"
            ]
        )


def build_stage_run(
    model: Transformer,
    objective: Objective,
    loader: BatchSource,
    tcfg: TrainingConfig,
    out_dir: Path | None,
    config_dict: dict[str, Any],
    micro_batch_size: int,
    seq_len: int,
    dist: DistInfo | None = None,
) -> Run:
    """A :class:`Run` of the fit loop for a post-training stage: ``model`` wrapped for data
    parallelism when ``dist`` spans several processes; metrics written by rank 0 alone."""
    if dist is None:
        device = next(model.parameters()).device
        dist = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    metrics = None
    if out_dir is not None and dist.is_main:
        metrics = MetricsLogger(out_dir, tcfg.logging, config_dict)
    return Run(
        cfg=tcfg,
        model_cfg=model.config,
        model=wrap_model(model, tcfg.distributed, dist),
        objective=objective,
        optimizer=build_optimizer(model, tcfg.optimizer),
        train_loader=loader,
        dist=dist,
        out_dir=out_dir,
        config_dict=config_dict,
        metrics=metrics,
        micro_batch_size=micro_batch_size,
        seq_len=seq_len,
    )


def _start(stage: str, out_dir: Path, tcfg: TrainingConfig, log_level: str) -> DistInfo:
    """Join the torchrun process group (if any); rank 0 logs to ``OUT/train.log``, the other
    ranks to stderr at WARNING."""
    dist = init_distributed(tcfg.device)
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        setup_logging(log_level, out_dir / "train.log")
    else:
        setup_logging("WARNING")
    check_world(stage, tcfg, dist)
    if dist.enabled:
        logger.info(f"{stage}: rank 0 of {dist.world_size} ({tcfg.distributed}) on {dist.device}")
    if tcfg.num_threads is not None:
        torch.set_num_threads(tcfg.num_threads)
    seed_everything(tcfg.seed)
    return dist


def _fit(run: Run, resume_run: bool) -> tuple[dict[str, Any], TrainState]:
    state = TrainState()
    if resume_run:
        if resume(run, state) is None:
            logger.info("--resume: no checkpoint yet, starting from the init weights")
    elif run.metrics is not None and run.metrics.path.exists():
        run.metrics.path.unlink()
    summary = fit(run, state)
    summary.pop("samples", None)
    return summary, state


def finish(
    model: Transformer,
    init: Init,
    out_dir: Path,
    lora: LoRAConfig | None,
    *,
    export_hf: bool = False,
    chat_template: str | None = None,
) -> dict[str, str]:
    """Save the adapter (PEFT layout) if any, merge it, save ``model/`` (and ``hf/``), with the
    tokenizer and the chat template the stage used."""
    paths: dict[str, str] = {}
    if lora is not None:
        adapter = lora_state_dict(model)
        family = family_of(model.config, init.path)
        save_peft_adapter(adapter, lora, family, out_dir / "adapter", base_model=str(init.path))
        paths["adapter"] = str(out_dir / "adapter")
        merge_lora(model)
    save_model(model, out_dir / "model")
    copy_tokenizer(init.path, out_dir / "model", chat_template)
    paths["model"] = str(out_dir / "model")
    if export_hf:
        convert_to_hf(out_dir / "model", out_dir / "hf", overwrite=True)
        paths["hf"] = str(out_dir / "hf")
    return paths


def _conclude(
    dist: DistInfo, out_dir: Path, summary: dict[str, Any], started: float
) -> dict[str, Any]:
    """Rank 0's last step of every stage: stamp the wall time, write ``summary.json``, and hand
    the summary to the other ranks (see :func:`_shared_summary`)."""
    summary["wall_time_s"] = round(time.perf_counter() - started, 2)
    atomic_write_json(out_dir / "summary.json", summary)
    logger.info("summary: " + json.dumps(summary, default=str))
    return _shared_summary(dist, summary)


def _shared_summary(dist: DistInfo, summary: dict[str, Any] | None) -> dict[str, Any]:
    """Rank 0's summary on every rank (the other ranks skip evaluation and export)."""
    shared = broadcast_object(summary) if dist.enabled else summary
    assert isinstance(shared, dict)
    return shared


# ---------------------------------------------------------------------------------------------
# SFT


def tokenize_sft(
    chat: ChatFormat, examples: Sequence[SFTExample], seq_len: int
) -> tuple[list[SequenceExample], int]:
    """Tokenised, truncated examples with at least one supervised token, and how many were
    dropped (nothing supervised left after truncation)."""
    kept, dropped = [], 0
    for ex in examples:
        seq = truncate(chat.tokenize(ex.messages), seq_len)
        if seq is None:
            dropped += 1
        else:
            kept.append(seq)
    return kept, dropped


def _sft_prompts(examples: Sequence[SFTExample]) -> list[PromptExample]:
    out = []
    for ex in examples:
        if ex.answer is not None and ex.messages[-1]["role"] == "assistant":
            out.append(PromptExample(ex.messages[:-1], ex.answer))
    return out


def run_sft(
    cfg: SFTConfig,
    init_path: Path,
    out_dir: Path,
    *,
    resume_run: bool = False,
    export_hf: bool = False,
    log_level: str = "INFO",
) -> dict[str, Any]:
    """Supervised fine-tuning from ``init_path``; returns (and writes) the summary."""
    started = time.perf_counter()
    dist = _start("sft", out_dir, cfg.training, log_level)
    init = load_init(init_path, dist.device)
    chat = chat_format(init, cfg.chat)
    seq_len = min(cfg.loader.seq_len, init.model.config.max_seq_len)
    train, dropped = tokenize_sft(chat, list(sft_examples(cfg.data, "train")), seq_len)
    if dropped:
        logger.warning(f"{dropped} SFT examples dropped: no assistant token within {seq_len}")
    val_examples = take(sft_examples(cfg.data, "validation"), cfg.eval_examples)
    val, _ = tokenize_sft(chat, val_examples, seq_len)
    logger.info(f"SFT: {len(train)} training examples, {len(val)} held out")
    model = init.model
    if cfg.lora is not None:
        wrapped = apply_lora(model, cfg.lora)
        logger.info(f"LoRA on {len(wrapped)} linear layers")
    loader = SFTLoader(
        train,
        seq_len=seq_len,
        batch_size=cfg.loader.batch_size,
        packing=cfg.loader.packing,
        pad_id=pad_id(init.tokenizer),
        seed=cfg.training.seed,
        shuffle=cfg.loader.shuffle,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    config_dict = {
        "model": model.config.model_dump(mode="json"),
        "sft": cfg.model_dump(mode="json"),
    }
    run = build_stage_run(
        model,
        SFTObjective(),
        loader,
        cfg.training,
        out_dir,
        config_dict,
        cfg.loader.batch_size,
        seq_len,
        dist,
    )
    summary, _ = _fit(run, resume_run)
    if not dist.is_main:
        return _shared_summary(dist, None)
    summary["train_examples"] = len(train)
    summary["dropped_examples"] = dropped
    summary["val_loss"] = sft_validation_loss(model, val, seq_len, pad_id(init.tokenizer))
    prompts = _sft_prompts(val_examples)
    if prompts:
        summary["accuracy"] = exact_match_accuracy(model, chat, prompts, cfg.max_new_tokens)
    summary["outputs"] = finish(
        model, init, out_dir, cfg.lora, export_hf=export_hf, chat_template=chat.template
    )
    return _conclude(dist, out_dir, summary, started)


# ---------------------------------------------------------------------------------------------
# DPO


class PairLoader:
    """Endless, resumable stream of :class:`PreferenceBatch` over tokenised pairs.

    ``seqs[i]`` / ``seqs[n + i]``: (prompt ids, completion ids) of pair ``i``'s chosen and
    rejected completion; ``ref`` (2n,) their reference log-probs. With ``world_size`` > 1 each
    rank takes its disjoint share of every global micro-batch of ``batch_size * world_size``
    pairs (:func:`~zmaj_lm.posttrain.batches.rank_share`); the state is the same on every rank.
    """

    def __init__(
        self,
        seqs: Sequence[tuple[list[int], list[int]]],
        ref: torch.Tensor,
        *,
        seq_len: int,
        batch_size: int,
        pad_id: int,
        seed: int,
        shuffle: bool,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.seqs, self.ref = list(seqs), ref
        self.rank, self.world_size = rank, world_size
        self.n = len(self.seqs) // 2
        if self.n == 0:
            raise ValueError("no preference pairs to train on")
        self.seq_len, self.batch_size, self.pad_id = seq_len, batch_size, pad_id
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.index = 0, 0

    def _order(self, epoch: int) -> np.ndarray[Any, np.dtype[np.int64]]:
        if not self.shuffle:
            return np.arange(self.n, dtype=np.int64)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n).astype(np.int64)

    def __iter__(self) -> Iterator[PreferenceBatch]:
        while True:
            if self.index >= self.n:
                self.epoch, self.index = self.epoch + 1, 0
            order = self._order(self.epoch)
            mine, stop = rank_share(self.index, self.n, self.batch_size, self.rank, self.world_size)
            idx = order[mine].tolist()
            self.index = stop
            rows = [self.seqs[i] for i in idx] + [self.seqs[self.n + i] for i in idx]
            base = pad_sequences(rows, self.seq_len, self.pad_id)
            ref = torch.cat([self.ref[idx], self.ref[[self.n + i for i in idx]]])
            yield PreferenceBatch(**vars(base), ref_logps=ref.float())

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def reference_logps(
    model: Transformer,
    seqs: Sequence[tuple[list[int], list[int]]],
    seq_len: int,
    pad: int,
    cache: Path | None,
) -> torch.Tensor:
    """Summed completion log-probs of ``seqs`` under the (initial) model, computed once and
    cached in ``cache`` (reused when it holds as many values)."""
    if cache is not None and cache.is_file():
        stored = load_file(str(cache))["ref_logps"]
        if stored.shape[0] == len(seqs):
            logger.info(f"reference log-probs from {cache}")
            return stored
    t0 = time.perf_counter()
    logps, _ = completion_logps(model, seqs, seq_len, pad)
    logger.info(
        f"reference log-probs of {len(seqs)} completions in {time.perf_counter() - t0:.1f}s"
    )
    if cache is not None:
        save_file({"ref_logps": logps.contiguous()}, str(cache))
    return logps


@torch.no_grad()
def sampled_pairs(
    model: Transformer,
    chat: ChatFormat,
    problems: Sequence[PromptExample],
    fallback: Sequence[PreferenceExample],
    cfg: DPOConfig,
    seed: int,
) -> list[PreferenceExample]:
    """(prompt, right answer, one of the model's own wrong sampled answers) per problem, or the
    problem's pair from ``fallback`` (same order) when every sample was right."""
    from zmaj_lm.config.generation import SamplingConfig
    from zmaj_lm.models.generation import generate
    from zmaj_lm.posttrain.rewards import exact_match

    sampling = SamplingConfig(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.sample_temperature,
        stop_token_ids=chat.stop_token_ids(),
    )
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    k, chunk = cfg.num_samples, 64
    pairs = []
    for lo in range(0, len(problems), chunk):
        batch = problems[lo : lo + chunk]
        prompts = [chat.prompt_ids(p.prompt) for p in batch for _ in range(k)]
        texts = [
            chat.tokenizer.decode(o)
            for o in generate(model, prompts, sampling, generator=generator)
        ]
        for j, p in enumerate(batch):
            wrong = [
                t for t in texts[j * k : (j + 1) * k] if t.strip() and not exact_match(t, p.answer)
            ]
            if wrong:
                pairs.append(PreferenceExample(p.prompt, p.answer, wrong[0]))
            else:
                pairs.append(fallback[lo + j])
    return pairs


def _pairs_or_error(pairs: list[PreferenceExample], what: str) -> list[PreferenceExample]:
    if not pairs:
        raise ExampleError(f"{what}: no preference pairs")
    return pairs


def run_dpo(
    cfg: DPOConfig,
    init_path: Path,
    out_dir: Path,
    *,
    resume_run: bool = False,
    export_hf: bool = False,
    log_level: str = "INFO",
) -> dict[str, Any]:
    """Preference optimisation from ``init_path`` (also the reference); returns the summary."""
    started = time.perf_counter()
    dist = _start("dpo", out_dir, cfg.training, log_level)
    init = load_init(init_path, dist.device)
    chat = chat_format(init, cfg.chat)
    model = init.model
    seq_len = min(cfg.loader.seq_len, model.config.max_seq_len)
    pad = pad_id(init.tokenizer)
    train_pairs = _pairs_or_error(
        list(preference_examples(cfg.data, "train", cfg.pairs_per_problem)), "train split"
    )
    eval_pairs = take(preference_examples(cfg.data, "validation"), cfg.eval_pairs)
    near_miss_eval = eval_pairs
    if cfg.negatives == "samples":
        if cfg.data.kind != "arithmetic" or cfg.pairs_per_problem != 1:
            raise ExampleError("negatives=samples needs data.kind=arithmetic, pairs_per_problem=1")
        sampled: tuple[list[PreferenceExample], list[PreferenceExample]] | None = None
        if dist.is_main:  # rank 0 samples, every rank trains on its pairs
            t0 = time.perf_counter()
            train_problems = list(prompt_examples(cfg.data, "train"))
            eval_problems = take(prompt_examples(cfg.data, "validation"), cfg.eval_pairs)
            sampled = (
                sampled_pairs(model, chat, train_problems, train_pairs, cfg, cfg.training.seed),
                sampled_pairs(model, chat, eval_problems, eval_pairs, cfg, cfg.training.seed + 1),
            )
            logger.info(f"sampled on-policy negatives in {time.perf_counter() - t0:.1f}s")
        if dist.enabled:
            sampled = broadcast_object(sampled)
        assert sampled is not None
        train_pairs, eval_pairs = sampled
    seqs = pair_sequences(chat, train_pairs)
    logger.info(f"DPO ({cfg.loss}): {len(train_pairs)} pairs, {len(eval_pairs)} held out")
    before = near_before = 0.0
    if dist.is_main:
        before = preference_accuracy(model, chat, eval_pairs, seq_len, pad)
        near_before = preference_accuracy(model, chat, near_miss_eval, seq_len, pad)
    if cfg.loss == "simpo":
        ref = torch.zeros(len(seqs))
    else:
        # rank 0 computes (or reads its cache of) every pair's reference and shares it, so the
        # cache file is never read while it is being written
        ref = (
            reference_logps(model, seqs, seq_len, pad, out_dir / REF_LOGPS_NAME)
            if dist.is_main
            else torch.empty(0)
        )
        if dist.enabled:
            ref = broadcast_object(ref)
    if cfg.lora is not None:
        apply_lora(model, cfg.lora)
    loader = PairLoader(
        seqs,
        ref,
        seq_len=seq_len,
        batch_size=cfg.loader.batch_size,
        pad_id=pad,
        seed=cfg.training.seed,
        shuffle=cfg.loader.shuffle,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    objective = DPOObjective(
        cfg.loss, cfg.beta, cfg.label_smoothing, cfg.simpo_gamma, cfg.rpo_alpha
    )
    config_dict = {
        "model": model.config.model_dump(mode="json"),
        "dpo": cfg.model_dump(mode="json"),
    }
    run = build_stage_run(
        model,
        objective,
        loader,
        cfg.training,
        out_dir,
        config_dict,
        2 * cfg.loader.batch_size,
        seq_len,
        dist,
    )
    summary, _ = _fit(run, resume_run)
    if not dist.is_main:
        return _shared_summary(dist, None)
    summary["train_pairs"] = len(train_pairs)
    summary["pref_accuracy_before"] = before
    summary["pref_accuracy_after"] = preference_accuracy(model, chat, eval_pairs, seq_len, pad)
    summary["negatives"] = cfg.negatives
    summary["pref_accuracy_near_miss_before"] = near_before
    summary["pref_accuracy_near_miss_after"] = preference_accuracy(
        model, chat, near_miss_eval, seq_len, pad
    )
    summary["outputs"] = finish(
        model, init, out_dir, cfg.lora, export_hf=export_hf, chat_template=chat.template
    )
    return _conclude(dist, out_dir, summary, started)


# ---------------------------------------------------------------------------------------------
# GRPO


def run_grpo(
    cfg: GRPOConfig,
    init_path: Path,
    out_dir: Path,
    *,
    resume_run: bool = False,
    export_hf: bool = False,
    log_level: str = "INFO",
) -> dict[str, Any]:
    """Group relative policy optimisation from ``init_path``; returns the summary."""
    started = time.perf_counter()
    dist = _start("grpo", out_dir, cfg.training, log_level)
    init = load_init(init_path, dist.device)
    chat = chat_format(init, cfg.chat)
    model = init.model
    train_prompts = list(prompt_examples(cfg.data, "train"))
    eval_prompts = take(prompt_examples(cfg.data, "validation"), cfg.eval_problems)
    logger.info(f"GRPO: {len(train_prompts)} prompts, {len(eval_prompts)} held out")
    before = sampled_before = 0.0
    if dist.is_main:  # held-out evaluation: rank 0 alone, on the whole held-out set
        before = exact_match_accuracy(model, chat, eval_prompts, cfg.max_new_tokens)
        sampled_before = sampled_accuracy(
            model, chat, eval_prompts, cfg.max_new_tokens, temperature=cfg.temperature
        )
    reference = None
    if cfg.beta != 0:
        reference = copy.deepcopy(model).eval()
        reference.requires_grad_(False)
    config_dict = {
        "model": model.config.model_dump(mode="json"),
        "grpo": cfg.model_dump(mode="json"),
    }
    metrics_holder: list[MetricsLogger | None] = [None]
    rounds_done: list[int] = [0]

    def on_round(stats: RolloutStats) -> None:
        rounds_done[0] += 1
        sink = metrics_holder[0]
        values = vars(stats)
        if sink is not None:
            # Keyed by the optimizer step the round is sampled for (each round feeds
            # ``num_iterations`` steps), so a resume drops exactly the rounds it samples again.
            sink.log(stats.round * cfg.num_iterations + 1, "rollout", values)
        if stats.round % max(cfg.training.logging.every, 1) == 0:
            logger.info(
                f"rollout {stats.round}: reward {stats.reward_mean:.3f}±{stats.reward_std:.3f} "
                f"acc {stats.accuracy:.3f} len {stats.completion_len:.1f} "
                f"({stats.rollout_s * 1000:.0f} ms)"
            )

    source = RolloutSource(
        model,
        reference,
        chat,
        train_prompts,
        cfg,
        seed=cfg.training.seed,
        grad_accum=cfg.training.grad_accum_steps,
        on_round=on_round,
        rank=dist.rank,
        world_size=dist.world_size,
        reduce_sum=_rank_sum(dist) if dist.enabled else None,
    )
    objective = GRPOObjective(cfg.loss_type, cfg.beta, cfg.epsilon, cfg.epsilon_high)
    run = build_stage_run(
        model,
        objective,
        source,
        cfg.training,
        out_dir,
        config_dict,
        cfg.loader.batch_size * cfg.num_generations,
        source.seq_len,
        dist,
    )
    metrics_holder[0] = run.metrics
    summary, state = _fit(run, resume_run)
    if not dist.is_main:
        return _shared_summary(dist, None)
    total = source.rollout_s + state.train_time_s
    summary["rollout_time_s"] = round(source.rollout_s, 2)
    summary["rollout_share"] = source.rollout_s / total if total > 0 else 0.0
    if source.history:
        last = source.history[-min(len(source.history), 5) :]
        summary["train_reward_last"] = float(np.mean([s.reward_mean for s in last]))
        summary["train_accuracy_first"] = source.history[0].accuracy
    summary["accuracy_before"] = before
    summary["accuracy_after"] = exact_match_accuracy(model, chat, eval_prompts, cfg.max_new_tokens)
    summary["sampled_accuracy_before"] = sampled_before
    summary["sampled_accuracy_after"] = sampled_accuracy(
        model, chat, eval_prompts, cfg.max_new_tokens, temperature=cfg.temperature
    )
    summary["outputs"] = finish(
        model, init, out_dir, None, export_hf=export_hf, chat_template=chat.template
    )
    return _conclude(dist, out_dir, summary, started)


def _rank_sum(dist: DistInfo) -> Callable[[torch.Tensor], torch.Tensor]:
    """Sum a CPU tensor over ranks (through ``dist.device``, as NCCL needs), back on the CPU."""

    def reduce(t: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(t.to(dist.device)).cpu()

    return reduce


__all__ = [
    "Init",
    "PairLoader",
    "build_stage_run",
    "check_world",
    "finish",
    "load_init",
    "run_dpo",
    "run_grpo",
    "run_sft",
    "tokenize_sft",
]
