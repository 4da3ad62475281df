"""PackedLoader: exact resume, per-epoch reshuffling, rank split, finite validation pass."""

import json
import tempfile
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zmaj_lm.config.data import SourceConfig
from zmaj_lm.data.batch import IGNORE_INDEX, Batch
from zmaj_lm.data.errors import ShardError
from zmaj_lm.data.loader import PackedLoader, rank_documents
from zmaj_lm.data.prepare import prepare_shards
from zmaj_lm.data.shards import Manifest, ShardSet
from zmaj_lm.data.tokenizer import Tokenizer


def _same(a: list[Batch], b: list[Batch]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(getattr(x, f), getattr(y, f))
        for x, y in zip(a, b, strict=True)
        for f in ("input_ids", "labels", "document_ids", "position_ids", "loss_mask", "source_ids")
    )


def _doc_tokens(batches: list[Batch], eos: int) -> Counter[tuple[int, ...]]:
    """Multiset of complete documents seen (split back at EOS, so pieces join up)."""
    docs: Counter[tuple[int, ...]] = Counter()
    current: list[int] = []
    for batch in batches:
        for t in batch.input_ids[batch.document_ids >= 0].tolist():
            current.append(t)
            if t == eos:
                docs[tuple(current)] += 1
                current = []
    assert not current
    return docs


def _all_docs(out: Path) -> Counter[tuple[int, ...]]:
    shards = ShardSet(out, "train")
    return Counter(tuple(shards.tokens(d).tolist()) for d in range(shards.num_documents))


@pytest.mark.parametrize("packing", ["concat", "best_fit", "pad"])
@settings(max_examples=8, deadline=None)
@given(k=st.integers(0, 40), batch_size=st.integers(1, 9), seq_len=st.integers(4, 40))
def test_resume_continues_with_the_identical_batch(
    prepared: tuple[Path, Manifest], packing: str, k: int, batch_size: int, seq_len: int
) -> None:
    out, _ = prepared
    kwargs = {"seq_len": seq_len, "batch_size": batch_size, "packing": packing, "seed": 7}
    reference = list(islice(PackedLoader(out, **kwargs), k + 5))  # type: ignore[arg-type]
    first = PackedLoader(out, **kwargs)  # type: ignore[arg-type]
    list(islice(first, k))
    state = first.state_dict()
    resumed = PackedLoader(out, **kwargs)  # type: ignore[arg-type]
    resumed.load_state_dict(state)
    assert _same(list(islice(resumed, 5)), reference[k:])


def test_resume_across_an_epoch_boundary(prepared: tuple[Path, Manifest]) -> None:
    out, _ = prepared
    loader = PackedLoader(out, seq_len=64, batch_size=16, packing="best_fit")
    per_epoch = loader.batches_per_epoch
    reference = list(islice(PackedLoader(out, seq_len=64, batch_size=16), 2 * per_epoch + 3))
    list(islice(loader, per_epoch + 1))
    assert loader.epoch == 1
    state = loader.state_dict()
    again = PackedLoader(out, seq_len=64, batch_size=16)
    again.load_state_dict(state)
    assert _same(list(islice(again, per_epoch + 2)), reference[per_epoch + 1 :])


def test_state_from_another_stream_is_refused(prepared: tuple[Path, Manifest]) -> None:
    out, _ = prepared
    state = PackedLoader(out, seq_len=32, batch_size=2, seed=1).state_dict()
    other = PackedLoader(out, seq_len=32, batch_size=2, seed=2)
    with pytest.raises(ValueError, match=r"seed=1 \(loader has 2\)"):
        other.load_state_dict(state)
    bigger_batches = PackedLoader(out, seq_len=32, batch_size=5, seed=1)
    bigger_batches.load_state_dict(state)


@pytest.mark.parametrize("packing", ["concat", "best_fit", "pad"])
def test_epochs_cover_every_document_once_and_reshuffle(
    prepared: tuple[Path, Manifest], packing: str
) -> None:
    out, manifest = prepared
    eos = manifest.eos_id
    expected = _all_docs(out)
    loader = PackedLoader(out, seq_len=48, batch_size=4, packing=packing)  # type: ignore[arg-type]
    n = loader.batches_per_epoch
    finite = PackedLoader(out, seq_len=48, batch_size=4, packing=packing, infinite=False)  # type: ignore[arg-type]
    one_pass = list(finite)
    assert len(one_pass) == n == len(finite)
    assert _doc_tokens(one_pass, eos) == expected
    assert _same(list(finite), one_pass), "the next iter() is a fresh identical pass"
    epoch0 = PackedLoader(out, seq_len=48, batch_size=4, packing=packing, shuffle=True)  # type: ignore[arg-type]
    assert (
        epoch0.plan(0).num_tokens
        == epoch0.plan(1).num_tokens
        == sum(len(d) * c for d, c in expected.items())
    )
    assert not (
        epoch0.plan(0).seg_doc.shape == epoch0.plan(1).seg_doc.shape
        and (epoch0.plan(0).seg_doc == epoch0.plan(1).seg_doc).all()
    ), "epoch 1 is reshuffled"


@pytest.mark.parametrize("world_size", [2, 3, 5])
def test_ranks_split_documents_without_overlap_or_loss(
    prepared: tuple[Path, Manifest], world_size: int
) -> None:
    out, manifest = prepared
    n = ShardSet(out, "train").num_documents
    for epoch in (0, 1):
        parts = [rank_documents(n, epoch, 3, r, world_size) for r in range(world_size)]
        merged = sorted(i for p in parts for i in p.tolist())
        assert merged == list(range(n))
    total: Counter[tuple[int, ...]] = Counter()
    for rank in range(world_size):
        loader = PackedLoader(
            out, seq_len=40, batch_size=8, rank=rank, world_size=world_size, infinite=False, seed=3
        )
        total.update(_doc_tokens(list(loader), manifest.eos_id))
    assert total == _all_docs(out)


def test_batches_are_well_formed_and_refuse_wrong_tokenizer(
    prepared: tuple[Path, Manifest],
) -> None:
    out, manifest = prepared
    loader = PackedLoader(
        out, seq_len=32, batch_size=4, tokenizer_fingerprint=manifest.tokenizer_fingerprint
    )
    batch = next(iter(loader))
    assert batch.input_ids.shape == (4, 32)
    assert batch.input_ids.dtype == torch.long
    assert batch.loss_mask.dtype == torch.bool
    assert torch.equal(batch.loss_mask, batch.labels != IGNORE_INDEX)
    assert loader.efficiency == loader.plan(0).efficiency > 0.9
    with pytest.raises(ShardError, match="not with this tokenizer"):
        PackedLoader(out, seq_len=32, batch_size=4, tokenizer_fingerprint="0" * 64)
    with pytest.raises(ShardError, match=r"manifest.json: missing"):
        PackedLoader(out / "nowhere", seq_len=32, batch_size=4)


def test_split_directory_and_validation_split(prepared: tuple[Path, Manifest]) -> None:
    out, manifest = prepared
    val = PackedLoader(out / "validation", seq_len=32, batch_size=4, infinite=False)
    assert val.shards.split == "validation"
    assert (
        sum(int((b.document_ids >= 0).sum()) for b in val)
        == manifest.split("validation").num_tokens
    )


@settings(max_examples=6, deadline=None)
@given(
    docs=st.lists(
        st.tuples(st.sampled_from("xyz"), st.lists(st.integers(1, 9), min_size=1, max_size=12)),
        min_size=2,
        max_size=30,
    ),
    packing=st.sampled_from(["concat", "best_fit", "pad"]),
    seq_len=st.integers(4, 24),
    world_size=st.integers(1, 2),
)
def test_source_ids_survive_prepare_pack_and_batch(
    tokenizer: Tokenizer,
    docs: list[tuple[str, list[int]]],
    packing: str,
    seq_len: int,
    world_size: int,
) -> None:
    """Random documents written with a ``site`` label, prepared, packed and batched: every token
    carries its own document's source. A document labelled ``x`` is made of ``x`` words only, so
    each token's text shows which source it must have."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "docs.jsonl"
        rows = [{"text": " ".join(c * k for k in words), "site": c} for c, words in docs]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        source = SourceConfig(
            kind="files", paths=(str(path),), source_field="site", validation_fraction=0.0
        )
        manifest = prepare_shards(source, tokenizer, Path(tmp) / "out", shard_tokens=40)
        assert manifest.source_names == list(dict.fromkeys(c for c, _ in docs))
        expected: Counter[str] = Counter()
        for text, (c, _) in zip((r["text"] for r in rows), docs, strict=True):
            expected[c] += len(tokenizer.encode(text)) + 1
        seen: Counter[str] = Counter()
        for rank in range(world_size):
            loader = PackedLoader(
                Path(tmp) / "out",
                seq_len=seq_len,
                batch_size=3,
                packing=packing,  # type: ignore[arg-type]
                infinite=False,
                rank=rank,
                world_size=world_size,
            )
            for batch in loader:
                assert batch.source_ids is not None
                assert torch.equal(batch.source_ids == -1, batch.document_ids == -1)
                real = batch.document_ids >= 0
                for tok, sid in zip(
                    batch.input_ids[real].tolist(), batch.source_ids[real].tolist(), strict=True
                ):
                    name = loader.source_names[sid]
                    seen[name] += 1
                    if tok != tokenizer.eos_id:
                        assert set(tokenizer.decode([tok])) <= {name, " "}
        assert seen == expected
