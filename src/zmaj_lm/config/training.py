"""Training settings: optimizer, LR schedule, batching, precision, evaluation, checkpoints, logging.

Every behaviour of the fit loop is one of these fields; the loop never guesses. A micro-batch is
``data.batch_size`` rows of ``data.seq_len`` tokens per rank; an optimizer step reads
``grad_accum_steps`` of them on each of ``world_size`` ranks. Whatever the split, the gradients
are the same (the loss is summed over tokens and divided by
the supervised tokens of the whole step).
"""

from typing import Literal

from pydantic import Field

from zmaj_lm.config.base import StrictModel


class OptimizerConfig(StrictModel):
    """Which optimizer updates the weights, and its hyperparameters."""

    name: Literal["adamw", "lion", "muon"] = "adamw"
    """``adamw``; ``lion`` (sign momentum, Chen et al. 2023; use ~3-10x lower lr); ``muon``
    (orthogonalised momentum for 2-D hidden weights, AdamW with ``lr`` for embeddings, the LM
    head, norms and biases)."""
    lr: float = Field(default=3e-4, gt=0)
    """Peak learning rate (of the AdamW part when ``name`` is muon)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """Momentum coefficients (AdamW, Lion)."""
    eps: float = Field(default=1e-8, gt=0)
    """AdamW denominator epsilon."""
    weight_decay: float = Field(default=0.1, ge=0)
    """Decoupled weight decay (multiplied by the current lr)."""
    decay_norms_biases_embeddings: bool = False
    """Also decay 1-D parameters (norm gains, biases) and embedding tables. Off by default: decaying
    them pulls gains towards zero and shrinks rare tokens' embeddings for no benefit."""
    muon_lr: float = Field(default=0.02, gt=0)
    """Peak learning rate of the Muon part (2-D weights inside the blocks)."""
    muon_momentum: float = Field(default=0.95, ge=0, lt=1)
    """Muon's Nesterov momentum."""
    muon_ns_steps: int = Field(default=5, gt=0)
    """Newton-Schulz iterations orthogonalising each Muon update."""


class ScheduleConfig(StrictModel):
    """Learning-rate multiplier as a function of the optimizer step."""

    name: Literal["cosine", "wsd", "constant"] = "cosine"
    """``cosine``: linear warmup then cosine decay to ``min_lr_ratio``; ``wsd``: warmup,
    constant, then linear decay over the last ``decay_fraction`` of the run; ``constant``: warmup
    then flat."""
    warmup_steps: int = Field(default=100, ge=0)
    """Steps of linear warmup from ~0 to the peak lr (capped at the run's length)."""
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    """Final lr as a fraction of the peak (cosine and wsd)."""
    decay_fraction: float = Field(default=0.2, gt=0, le=1)
    """Fraction of the run spent decaying (wsd)."""


class EvalConfig(StrictModel):
    """Evaluation during training (validation loss, perplexity, bits per byte, samples)."""

    every: int = Field(default=0, ge=0)
    """Evaluate every this many optimizer steps (0: only at the end)."""
    max_batches: int | None = Field(default=None, gt=0)
    """Cap on validation batches per periodic evaluation (``None``: the whole split). The final
    evaluation always reads the whole split."""
    batch_size: int | None = Field(default=None, gt=0)
    """Validation rows per batch (``None``: the training micro-batch size)."""
    length_buckets: list[int] = Field(default_factory=lambda: [32, 128, 512])
    """Upper bounds of the document-length buckets the validation loss is broken down by;
    documents longer than the last bound form one more bucket."""
    num_samples: int = Field(default=2, ge=0)
    """Generations sampled and logged at each evaluation."""
    sample_prompts: list[str] = Field(default_factory=lambda: ["def ", "import "])
    """Prompts for the sampled generations (cycled when fewer than ``num_samples``)."""
    sample_max_new_tokens: int = Field(default=48, ge=1)
    """Tokens generated per sample."""
    sample_temperature: float = Field(default=0.8, ge=0)
    """Temperature of the samples (0 is greedy)."""
    use_ema: bool = True
    """Evaluate the EMA weights when ``training.ema_decay`` is set."""


class CheckpointConfig(StrictModel):
    """Where and how often the run saves itself."""

    keep_last: int = Field(default=2, ge=1)
    """Number of most recent checkpoints kept on disk."""
    save_final: bool = True
    """Save a checkpoint when the run ends (also when stopped by the time budget)."""


class LoggingConfig(StrictModel):
    """Observability: console, ``train.log``, ``metrics.jsonl``, optional W&B / TensorBoard."""

    every: int = Field(default=10, ge=1)
    """Log training metrics every this many optimizer steps."""
    progress_bar: bool = True
    """Show a tqdm progress bar with ETA on rank 0."""
    wandb: bool = False
    """Also log to Weights & Biases (needs ``wandb`` installed)."""
    wandb_project: str = "zmaj-lm"
    """W&B project name."""
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    """W&B mode; offline by default so runs never need the network."""
    tensorboard: bool = False
    """Also write TensorBoard event files to ``OUT/tensorboard`` (needs ``tensorboard``)."""
    plot: bool = True
    """Write ``loss_curve.png`` at the end of the run."""


class TrainingConfig(StrictModel):
    """Everything the fit loop does, from batch sizes to failure handling."""

    objective: Literal["pretrain"] = "pretrain"
    """What the loss is; stages (SFT, DPO, GRPO) differ only in this."""
    seed: int = 0
    """Seeds Python, NumPy and torch, the model initialisation and the data order."""
    grad_accum_steps: int = Field(default=1, gt=0)
    """Micro-batches accumulated per optimizer step on each rank."""
    max_steps: int = Field(default=1000, gt=0)
    """Optimizer steps of the run (an upper bound when ``max_time_s`` is set)."""
    save_every: int = Field(default=0, ge=0)
    """Save a checkpoint every this many optimizer steps (0: only at the end); where and how
    many are kept is ``checkpoint``."""
    max_time_s: float | None = Field(default=None, gt=0)
    """Wall-clock budget of the training loop (loading batches and steps; evaluation and saving
    excluded). After ``calibration_steps`` the run measures its step time and fixes the number
    of steps that fit, so the LR schedule decays to that step; afterwards it shortens the run
    whenever the median of the last ``calibration_steps`` steps says it would overrun. The step
    count is saved in checkpoints, but a time-budgeted run is only bitwise reproducible up to
    these timing decisions."""
    calibration_steps: int = Field(default=8, ge=2)
    """Steps timed before fixing the step count of a time-budgeted run (the first step is
    excluded as warm-up), and the window of recent steps that may shorten it later."""
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    """Optimizer and its hyperparameters."""
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    """Learning-rate schedule."""
    grad_clip: float | None = Field(default=1.0, gt=0)
    """Clip the global gradient norm to this value (``None``: no clipping)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast dtype of the forward pass; weights and optimizer state stay fp32. fp16 uses
    dynamic loss scaling."""
    compile: bool = False
    """Run the model through ``torch.compile``."""
    ema_decay: float | None = Field(default=None, gt=0, lt=1)
    """Keep an exponential moving average of the weights with this decay (``None``: no EMA)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train; ``auto`` picks CUDA when available."""
    num_threads: int | None = Field(default=None, gt=0)
    """``torch.set_num_threads`` for CPU training (``None``: leave torch's default)."""
    distributed: Literal["ddp", "fsdp"] = "ddp"
    """Data-parallel strategy when launched with several processes (torchrun): DDP or FSDP2
    ``fully_shard``."""
    peak_flops: float | None = Field(default=None, gt=0)
    """Peak FLOP/s of one device for MFU; ``None`` looks up known GPUs and skips MFU otherwise."""
    max_bad_steps: int = Field(default=5, ge=1)
    """Stop after this many consecutive steps with a non-finite loss or gradient (each is
    skipped; the last good checkpoint stays intact)."""
    oom_auto_halve: bool = False
    """On CUDA out-of-memory, halve the micro-batch size and double the accumulation steps
    (same global batch) instead of stopping with a message."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """Validation during and after training."""
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    """Checkpoint cadence and retention."""
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    """Metrics sinks and cadence."""
