"""Batched autoregressive generation with a preallocated KV cache.

Prompts of different lengths are left-padded into one batch. Padding slots get document id -1,
so no real token attends to them, and position ids count only real tokens: every prompt decodes
exactly as it would alone. Each step feeds only the newest token; keys and values of everything
before it come from the cache.
"""

from collections.abc import Callable, Sequence
from functools import cache

import torch
from torch import Tensor

from zmaj_lm.config.generation import SamplingConfig
from zmaj_lm.models.cache import KVCache
from zmaj_lm.models.transformer import ModelOutput, Transformer


def process_logits(logits: Tensor, history: Tensor | None, cfg: SamplingConfig) -> Tensor:
    """Apply repetition penalty, temperature, top-k, top-p and min-p to logits (B, V) fp32.

    ``history`` (B, L) holds the token ids seen so far (-1 for padding) for the penalty. Filtered
    tokens get -inf. With temperature 0 only the penalty is applied (greedy picks the argmax).
    """
    logits = logits.float()
    if cfg.repetition_penalty != 1.0 and history is not None:
        # scatter_add, not scatter: padding (-1, clamped to 0) must not clear token 0's count.
        counts = torch.zeros_like(logits).scatter_add_(
            1, history.clamp(min=0), (history >= 0).to(logits.dtype)
        )
        seen = counts > 0
        penalised = torch.where(
            logits > 0, logits / cfg.repetition_penalty, logits * cfg.repetition_penalty
        )
        logits = torch.where(seen, penalised, logits)
    if cfg.temperature == 0:
        return logits
    logits = logits / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop_sorted = (cum - torch.softmax(sorted_logits, dim=-1)) >= cfg.top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, sorted_idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    if cfg.min_p is not None:
        probs = torch.softmax(logits, dim=-1)
        threshold = cfg.min_p * probs.max(dim=-1, keepdim=True).values
        logits = logits.masked_fill(probs < threshold, float("-inf"))
    return logits


def sample_next(
    logits: Tensor,
    history: Tensor | None,
    cfg: SamplingConfig,
    generator: torch.Generator | None = None,
) -> Tensor:
    """logits (B, V) -> next token ids (B,)."""
    processed = process_logits(logits, history, cfg)
    if cfg.temperature == 0:
        return processed.argmax(dim=-1)
    probs = torch.softmax(processed, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _decode_step(
    model: Transformer,
    token: Tensor,
    position_ids: Tensor,
    document_ids: Tensor | None,
    cache: KVCache,
) -> Tensor:
    """One decode step: token (B, 1) -> logits (B, V) of the next token."""
    out: ModelOutput = model(
        token, position_ids=position_ids, document_ids=document_ids, cache=cache
    )
    return out.logits[:, -1]


@cache
def compiled_decode_step() -> Callable[..., Tensor]:
    """:func:`_decode_step` under ``torch.compile`` with dynamic shapes, built once per process.

    At batch 1 a small model's decode step is mostly per-op overhead (dozens of tiny kernels per
    layer), which compilation fuses away. Dynamic shapes let one graph serve every cache length
    and batch size; a padded batch and the last slot of the cache each add one more graph. The
    first call pays for the compilation (seconds on CPU, where it needs a C++ compiler).
    """
    return torch.compile(_decode_step, dynamic=True)


@torch.inference_mode()
def generate(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    cfg: SamplingConfig,
    *,
    generator: torch.Generator | None = None,
    on_tokens: Callable[[Tensor, Tensor], None] | None = None,
    compile: bool = False,
) -> list[list[int]]:
    """Continue each prompt; returns the new tokens of each (stop tokens excluded).

    ``on_tokens(tokens (B,), active (B,) bool)`` is called after every step, for streaming. The
    whole call runs under ``torch.inference_mode`` (cheaper per op than ``no_grad``, which matters
    at batch 1), so the tensors it hands to ``on_tokens`` cannot enter autograd; copy them first.
    ``compile`` runs the decode steps through :func:`compiled_decode_step`.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt, and every prompt needs a token")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    B, L = len(prompts), max(len(p) for p in prompts)
    total = L + cfg.max_new_tokens
    if total > model.config.max_seq_len:
        raise ValueError(
            f"prompt ({L}) + max_new_tokens ({cfg.max_new_tokens}) exceeds max_seq_len "
            f"({model.config.max_seq_len})"
        )
    input_ids = torch.zeros(B, L, dtype=torch.long, device=device)
    document_ids = torch.full((B, L), -1, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        input_ids[i, L - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        document_ids[i, L - len(p) :] = 0
    real = document_ids >= 0
    position_ids = (real.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, L)
    # Without padding no document ids are passed, so the cache knows every decode step may
    # attend to everything and builds no mask.
    padded = any(len(p) != L for p in prompts)

    was_training = model.training
    model.eval()
    cache = KVCache.allocate(model.config, B, total, dtype, device)
    out = model(
        input_ids,
        position_ids=position_ids,
        document_ids=document_ids if padded else None,
        cache=cache,
    )
    logits = out.logits[:, -1]  # (B, V)
    next_pos = position_ids[:, -1] + 1  # (B,)
    # Per-step work is kept to the model call: tokens go into preallocated buffers (no Python
    # list appends or concatenation per step), history is tracked only for the repetition
    # penalty, and the "all stopped?" sync happens only when there are stop tokens.
    check_stop = bool(cfg.stop_token_ids)
    stop = torch.tensor(cfg.stop_token_ids, dtype=torch.long, device=device)
    track_history = cfg.repetition_penalty != 1.0
    history = torch.full((B, total), -1, dtype=torch.long, device=device)  # (B, L + N)
    history[:, :L] = torch.where(real, input_ids, -1)
    filled = L
    new_tokens = torch.zeros(B, cfg.max_new_tokens, dtype=torch.long, device=device)
    emitted = torch.zeros(B, cfg.max_new_tokens, dtype=torch.bool, device=device)
    decode_docs = torch.zeros(B, 1, dtype=torch.long, device=device)
    active = torch.ones(B, dtype=torch.bool, device=device)
    steps = 0
    decode = compiled_decode_step() if compile else _decode_step
    for step in range(cfg.max_new_tokens):
        seen = history[:, :filled] if track_history else None
        token = sample_next(logits, seen, cfg, generator)  # (B,)
        emit = active & ~torch.isin(token, stop) if check_stop else active
        new_tokens[:, step] = token
        emitted[:, step] = emit
        steps = step + 1
        if on_tokens is not None:
            on_tokens(token, emit)
        active = emit
        if step == cfg.max_new_tokens - 1 or (check_stop and not bool(active.any())):
            break
        if track_history:
            history[:, filled] = torch.where(active, token, -1)
            filled += 1
        logits = decode(
            model, token[:, None], next_pos[:, None], decode_docs if padded else None, cache
        )
        next_pos = next_pos + 1
    tokens_cpu, emitted_cpu = new_tokens[:, :steps].cpu(), emitted[:, :steps].cpu()
    generated = [row[keep].tolist() for row, keep in zip(tokens_cpu, emitted_cpu, strict=True)]
    model.train(was_training)
    return generated
