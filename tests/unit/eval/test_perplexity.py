"""Token-weighted validation loss, bits per byte and the per-length and per-source breakdowns."""

import math

import pytest
import torch

from zmaj_lm.eval.losses import token_losses
from zmaj_lm.eval.perplexity import bits_per_byte, document_lengths, evaluate, source_digest
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


def test_loss_by_source_is_the_token_mean_of_each_sources_tokens() -> None:
    """Against a reference: for every source, the sum of its supervised tokens' losses over the
    whole pass divided by their number (not a mean of per-batch means)."""
    torch.manual_seed(0)
    model = Transformer(tiny_model_config())
    batches = make_batches(3, rows=3, seq_len=16, seed=7)
    g = torch.Generator().manual_seed(1)
    for b in batches:
        per_doc = torch.randint(0, 3, (b.document_ids.shape[0], 16), generator=g)
        b.source_ids = torch.where(
            b.document_ids >= 0, per_doc.gather(1, b.document_ids.clamp(min=0)), -1
        )
    batches[1].source_ids = torch.where(batches[1].document_ids >= 0, 2, -1)
    names = ["web", "code", "books", "never"]
    sums, counts = [0.0] * 4, [0] * 4
    with torch.no_grad():
        for b in batches:
            losses, _ = token_losses(model, b)
            for s in range(4):
                sel = b.loss_mask & (b.source_ids == s)
                sums[s] += float(losses[sel].double().sum())
                counts[s] += int(sel.sum())
    assert all(counts[:3])
    assert counts[3] == 0
    result = evaluate(model, batches, device=torch.device("cpu"), source_names=names)
    assert set(result.by_source) == {"web", "code", "books"}, "sources without tokens are left out"
    for s, name in enumerate(names[:3]):
        assert result.by_source[name] == pytest.approx(sums[s] / counts[s], rel=1e-9)
    weighted = sum(result.by_source[n] * counts[s] for s, n in enumerate(names[:3]))
    assert weighted / sum(counts) == pytest.approx(result.loss, rel=1e-9)
    figures = result.as_dict()
    assert figures["val_loss_src_books"] == result.by_source["books"]
    assert "val_loss_src_never" not in figures
    assert source_digest(result.by_source).startswith("3 sources, hardest ")
    assert source_digest({"web": 1.0}) == ""
    plain = evaluate(model, batches, device=torch.device("cpu"))
    assert plain.by_source == {}
    assert plain.loss == pytest.approx(result.loss, rel=1e-12)
