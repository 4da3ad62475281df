"""Held-out figures the stages and the pipeline gates are judged by.

* :func:`exact_match_accuracy`: greedy completions of held-out prompts, checked by the
  ``exact_match`` reward (what GRPO optimises and SFT should already reach).
* :func:`preference_accuracy`: share of held-out pairs whose chosen completion the model gives
  a higher summed log-probability than the rejected one (the model's own preference; DPO's
  training-time "reward accuracy" is the same comparison relative to the reference).
* :func:`sft_validation_loss`: mean cross-entropy per assistant token.
"""

from collections.abc import Sequence

import torch
from torch import nn

from zmaj_lm.config.generation import SamplingConfig
from zmaj_lm.models.generation import generate
from zmaj_lm.models.transformer import Transformer
from zmaj_lm.posttrain.batches import SequenceExample, pad_sequences, rows_to_batch, sequence_logps
from zmaj_lm.posttrain.chat import ChatFormat
from zmaj_lm.posttrain.examples import PreferenceExample, PromptExample
from zmaj_lm.posttrain.rewards import exact_match


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def greedy_completions(
    model: Transformer,
    chat: ChatFormat,
    prompts: Sequence[PromptExample],
    max_new_tokens: int,
    batch_size: int = 64,
) -> list[str]:
    """Greedy completions (decoded, stop token excluded) of ``prompts``."""
    sampling = SamplingConfig(
        max_new_tokens=max_new_tokens, temperature=0.0, stop_token_ids=chat.stop_token_ids()
    )
    texts: list[str] = []
    for i in range(0, len(prompts), batch_size):
        ids = [chat.prompt_ids(p.prompt) for p in prompts[i : i + batch_size]]
        outs = generate(model, ids, sampling)
        texts.extend(chat.tokenizer.decode(o) for o in outs)
    return texts


def exact_match_accuracy(
    model: Transformer,
    chat: ChatFormat,
    prompts: Sequence[PromptExample],
    max_new_tokens: int,
    batch_size: int = 64,
) -> float:
    """Fraction of ``prompts`` whose greedy completion starts with the right answer."""
    if not prompts:
        return float("nan")
    texts = greedy_completions(model, chat, prompts, max_new_tokens, batch_size)
    hits = [exact_match(t, p.answer) for t, p in zip(texts, prompts, strict=True)]
    return sum(hits) / len(hits)


@torch.no_grad()
def sampled_accuracy(
    model: Transformer,
    chat: ChatFormat,
    prompts: Sequence[PromptExample],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    samples: int = 4,
    seed: int = 0,
    batch_size: int = 64,
) -> float:
    """Mean exact match of ``samples`` completions per prompt sampled at ``temperature`` (the
    policy's own success rate, which GRPO optimises)."""
    if not prompts:
        return float("nan")
    sampling = SamplingConfig(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        stop_token_ids=chat.stop_token_ids(),
    )
    generator = torch.Generator(device=_device(model)).manual_seed(seed)
    hits = 0.0
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        ids = [chat.prompt_ids(p.prompt) for p in chunk for _ in range(samples)]
        outs = generate(model, ids, sampling, generator=generator)
        answers = [p.answer for p in chunk for _ in range(samples)]
        hits += sum(
            exact_match(chat.tokenizer.decode(o), a) for o, a in zip(outs, answers, strict=True)
        )
    return hits / (len(prompts) * samples)


def pair_sequences(
    chat: ChatFormat, pairs: Sequence[PreferenceExample]
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) of every chosen, then every rejected completion."""
    seqs = []
    for p in pairs:
        seqs.append((chat.prompt_ids(p.prompt), chat.completion_ids(p.prompt, p.chosen)))
    for p in pairs:
        seqs.append((chat.prompt_ids(p.prompt), chat.completion_ids(p.prompt, p.rejected)))
    return seqs


@torch.no_grad()
def completion_logps(
    model: nn.Module,
    seqs: Sequence[tuple[list[int], list[int]]],
    seq_len: int,
    pad_id: int,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs (N,) and completion lengths (N,) of ``seqs``."""
    batches = (
        pad_sequences(seqs[i : i + batch_size], seq_len, pad_id)
        for i in range(0, len(seqs), batch_size)
    )
    return sequence_logps(model, batches, _device(model))


def preference_accuracy(
    model: nn.Module,
    chat: ChatFormat,
    pairs: Sequence[PreferenceExample],
    seq_len: int,
    pad_id: int,
) -> float:
    """Share of ``pairs`` where log p(chosen | prompt) > log p(rejected | prompt)."""
    if not pairs:
        return float("nan")
    seqs = pair_sequences(chat, pairs)
    logps, _ = completion_logps(model, seqs, seq_len, pad_id)
    n = len(pairs)
    return float((logps[:n] > logps[n:]).float().mean())


@torch.no_grad()
def sft_validation_loss(
    model: nn.Module,
    examples: Sequence[SequenceExample],
    seq_len: int,
    pad_id: int,
    batch_size: int = 64,
) -> float:
    """Mean cross-entropy per supervised token of ``examples`` (one example per row)."""
    if not examples:
        return float("nan")
    total, count = 0.0, 0
    device = _device(model)
    was_training = model.training
    model.eval()
    for i in range(0, len(examples), batch_size):
        batch = rows_to_batch([[e] for e in examples[i : i + batch_size]], seq_len, pad_id)
        batch = batch.to(device)
        out = model(
            batch.input_ids, position_ids=batch.position_ids, document_ids=batch.document_ids
        )
        ce = torch.nn.functional.cross_entropy(
            out.logits.float().flatten(0, 1), batch.labels.flatten(), reduction="sum"
        )
        total += float(ce)
        count += batch.num_tokens
    model.train(was_training)
    return total / max(count, 1)
