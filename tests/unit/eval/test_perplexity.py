"""Token-weighted validation loss, bits per byte and the per-length breakdown."""

import math

import pytest
import torch

from zmaj_lm.eval.losses import token_losses
from zmaj_lm.eval.perplexity import bits_per_byte, document_lengths, evaluate
from zmaj_lm.models.transformer import Transformer

from ..training.conftest import make_batches, tiny_model_config


def test_document_lengths_of_packed_rows() -> None:
    docs = torch.tensor([[0, 0, 0, 1, 1, -1], [0, 1, 1, 1, 1, 1]])
    assert document_lengths(docs).tolist() == [[3, 3, 3, 2, 2, 1], [1, 5, 5, 5, 5, 5]]


def test_loss_is_weighted_by_tokens_not_batches() -> None:
    torch.manual_seed(0)
    model = Transformer(tiny_model_config())
    batches = make_batches(3, rows=2, seq_len=16, seed=5)
    batches[2].loss_mask[:, 4:] = False
    batches[2].labels[:, 4:] = -100
    total, n, means = 0.0, 0, []
    with torch.no_grad():
        for b in batches:
            losses, _ = token_losses(model, b)
            total += float(losses[b.loss_mask].sum())
            n += int(b.loss_mask.sum())
            means.append(float(losses[b.loss_mask].mean()))
    result = evaluate(
        model, batches, device=torch.device("cpu"), bytes_per_token=2.5, length_buckets=[4, 8]
    )
    assert result.n_tokens == n
    assert result.loss == pytest.approx(total / n, rel=1e-6)
    assert result.loss != pytest.approx(sum(means) / len(means), rel=1e-3)
    assert result.perplexity == pytest.approx(math.exp(total / n), rel=1e-6)
    assert result.bits_per_byte == pytest.approx(total / n / math.log(2) / 2.5, rel=1e-6)
    assert set(result.by_length) <= {"1-4", "5-8", "9+"}
    assert min(result.by_length.values()) <= result.loss <= max(result.by_length.values())


def test_bits_per_byte_formula() -> None:
    assert bits_per_byte(math.log(2), tokens=100, n_bytes=400) == pytest.approx(0.25)


def test_max_batches_limits_the_pass() -> None:
    model = Transformer(tiny_model_config())
    batches = make_batches(4, rows=2, seq_len=16)
    one = evaluate(model, batches, device=torch.device("cpu"), max_batches=1)
    assert one.n_tokens == int(batches[0].loss_mask.sum())
