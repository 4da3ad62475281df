"""Shard preparation: round trip, idempotence, crash safety, repair, and refusals."""

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tokenizers
import torch
from tokenizers import models, pre_tokenizers

from zmaj_lm.config.data import SourceConfig
from zmaj_lm.data import prepare as prepare_module
from zmaj_lm.data.errors import ShardError
from zmaj_lm.data.loader import PackedLoader
from zmaj_lm.data.prepare import prepare_shards
from zmaj_lm.data.shards import Manifest, ShardSet, read_manifest, split_stats, token_dtype
from zmaj_lm.data.sources import iter_labelled, iter_texts, split_of
from zmaj_lm.data.tokenizer import Tokenizer, train_bpe


def _snapshot(out: Path) -> dict[str, tuple[int, int]]:
    """Every file with its inode and modification time: a rewrite changes one of them."""
    return {
        str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def _decoded(out: Path, split: str, tokenizer: Tokenizer) -> list[str]:
    shards = ShardSet(out, split, tokenizer_fingerprint=tokenizer.fingerprint)
    docs = []
    for d in range(shards.num_documents):
        ids = shards.tokens(d).tolist()
        assert ids[-1] == tokenizer.eos_id
        assert tokenizer.eos_id not in ids[:-1]
        docs.append(tokenizer.decode(ids[:-1]))
    return docs


def test_round_trip_restores_every_document(
    prepared: tuple[Path, Manifest], tokenizer: Tokenizer, arithmetic_source: SourceConfig
) -> None:
    out, manifest = prepared
    for split in ("train", "validation"):
        texts = list(iter_texts(arithmetic_source, split))  # type: ignore[arg-type]
        assert _decoded(out, split, tokenizer) == texts
        info = manifest.split(split)
        assert info.num_documents == len(texts)
        assert info.num_bytes == sum(len(t.encode()) for t in texts)
        assert info.num_tokens == sum(s.num_tokens for s in info.shards)
    assert len(manifest.split("train").shards) > 3
    assert manifest.complete
    assert manifest.dtype == "uint16"
    assert manifest.raw_documents == 4000
    assert split_stats(out, "validation") == manifest.split("validation")
    assert (out / "tokenizer" / "tokenizer.json").is_file()


def test_rerun_rewrites_nothing(
    prepared: tuple[Path, Manifest], tokenizer: Tokenizer, arithmetic_source: SourceConfig
) -> None:
    out, manifest = prepared
    before = _snapshot(out)
    again = prepare_shards(arithmetic_source, tokenizer, out, shard_tokens=5000)
    assert again == manifest
    assert _snapshot(out) == before


@pytest.fixture
def copy_of(prepared: tuple[Path, Manifest], tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(prepared[0], out)
    return out


@pytest.mark.parametrize(
    "damage", ["truncate", "corrupt", "delete", "delete_index", "delete_sources", "corrupt_sources"]
)
def test_damaged_shard_is_refused_by_loader_then_rebuilt(
    copy_of: Path, tokenizer: Tokenizer, arithmetic_source: SourceConfig, damage: str
) -> None:
    out = copy_of
    good = _snapshot(out)
    target = out / "train" / "shard_00002.bin"
    original = target.read_bytes()
    sources = out / "train" / "shard_00002.src.npy"
    original_sources = sources.read_bytes()
    if damage == "truncate":
        target.write_bytes(original[:-3])
        message = "shard_00002.bin: truncated"
    elif damage == "corrupt":
        target.write_bytes(original[:10] + bytes([original[10] ^ 1]) + original[11:])
        message = "shard_00002.bin: corrupt"
    elif damage == "delete":
        target.unlink()
        message = "shard_00002.bin: missing"
    elif damage == "delete_index":
        (out / "train" / "shard_00002.idx.npy").unlink()
        message = "shard_00002.idx.npy: missing"
    elif damage == "delete_sources":
        sources.unlink()
        message = "shard_00002.src.npy: missing"
    else:
        sources.write_bytes(original_sources[:-1] + bytes([original_sources[-1] ^ 1]))
        message = "shard_00002.src.npy: corrupt"
    with pytest.raises(ShardError, match=message):
        ShardSet(out, "train")
    prepare_shards(arithmetic_source, tokenizer, out, shard_tokens=5000)
    assert target.read_bytes() == original
    assert sources.read_bytes() == original_sources
    after = _snapshot(out)
    changed = {k for k in good if good[k] != after.get(k)}
    assert changed <= {f"train/shard_00002.{ext}" for ext in ("bin", "idx.npy", "src.npy")}
    ShardSet(out, "train")


def test_interrupted_run_leaves_no_partial_shard_and_resumes(
    prepared: tuple[Path, Manifest],
    tokenizer: Tokenizer,
    arithmetic_source: SourceConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "crash"
    real_add = prepare_module._ShardWriter.add
    calls = {"n": 0}

    def interrupted_add(self: prepare_module._ShardWriter, *args: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2500:
            raise KeyboardInterrupt
        real_add(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(prepare_module._ShardWriter, "add", interrupted_add)
    with pytest.raises(KeyboardInterrupt):
        prepare_shards(arithmetic_source, tokenizer, out, shard_tokens=5000)
    monkeypatch.undo()
    assert not list(out.rglob("*.tmp")), "no temporary file left"
    partial = read_manifest(out)
    assert partial is not None
    assert not partial.complete
    listed = {
        f"{split}/{shard.name}.bin"
        for split in ("train", "validation")
        for shard in partial.split(split).shards
    }
    assert len(listed) >= 2
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*.bin")}
    assert on_disk == listed, "only finished shards exist"
    with pytest.raises(ShardError, match=r"preparation did not finish"):
        ShardSet(out, "train")
    (out / "train" / ".shard_00009.bin.killed.tmp").write_bytes(b"left by a killed process")
    finished = prepare_shards(arithmetic_source, tokenizer, out, shard_tokens=5000)
    assert finished == prepared[1]
    assert not list(out.rglob("*.tmp"))
    for split in ("train", "validation"):
        for shard in finished.split(split).shards:
            a = (out / split / f"{shard.name}.bin").read_bytes()
            assert a == (prepared[0] / split / f"{shard.name}.bin").read_bytes()


def test_other_tokenizer_is_refused(
    copy_of: Path, arithmetic_source: SourceConfig, tokenizer: Tokenizer
) -> None:
    other = train_bpe(["1+2=3 4*5=20 " * 100], 300)
    with pytest.raises(ShardError, match=r"prepared with tokenizer .* not with this tokenizer"):
        prepare_shards(arithmetic_source, other, copy_of, shard_tokens=5000)
    with pytest.raises(ShardError, match=r"not with this tokenizer"):
        ShardSet(copy_of, "train", tokenizer_fingerprint=other.fingerprint)
    manifest = prepare_shards(arithmetic_source, other, copy_of, shard_tokens=5000, overwrite=True)
    assert manifest.tokenizer_fingerprint == other.fingerprint
    assert Tokenizer.load(copy_of / "tokenizer").fingerprint == other.fingerprint


def test_other_source_or_settings_are_refused(
    copy_of: Path, arithmetic_source: SourceConfig, tokenizer: Tokenizer
) -> None:
    changed = arithmetic_source.model_copy(update={"seed": 5})
    with pytest.raises(ShardError, match=r"another source"):
        prepare_shards(changed, tokenizer, copy_of, shard_tokens=5000)
    with pytest.raises(ShardError, match=r"shard_tokens=5000, not 6000"):
        prepare_shards(arithmetic_source, tokenizer, copy_of, shard_tokens=6000)
    with pytest.raises(ShardError, match=r"add_bos=False"):
        prepare_shards(arithmetic_source, tokenizer, copy_of, shard_tokens=5000, add_bos=True)


def test_empty_and_undecodable_documents_are_counted(tmp_path: Path, tokenizer: Tokenizer) -> None:
    path = tmp_path / "docs.jsonl"
    rows = [
        {"text": "a"},
        {"text": ""},
        {"text": "  \n"},
        {"text": None},
        {"text": 3},
        {"text": "b"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = SourceConfig(kind="files", paths=(str(path),), validation_fraction=0.0)
    manifest = prepare_shards(source, tokenizer, tmp_path / "out", add_bos=True)
    assert (manifest.skipped_empty, manifest.skipped_undecodable) == (2, 2)
    assert manifest.raw_documents == 6
    shards = ShardSet(tmp_path / "out", "train")
    assert [shards.tokens(i).tolist() for i in range(2)] == [
        [tokenizer.bos_id, *tokenizer.encode("a"), tokenizer.eos_id],
        [tokenizer.bos_id, *tokenizer.encode("b"), tokenizer.eos_id],
    ]
    with pytest.raises(ShardError, match=r"split 'validation' has no documents"):
        ShardSet(tmp_path / "out", "validation")


def test_undecodable_stdlib_file_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "lib"
    (root / "pkg" / "tests").mkdir(parents=True)
    (root / "good.py").write_text("x = 1\n")
    (root / "bad.py").write_bytes(b"\xff\xfe\x00 not utf-8")
    (root / "pkg" / "tests" / "t.py").write_text("skipped = True\n")
    from zmaj_lm.data.sources import stdlib

    assert list(stdlib.iter_documents(root)) == [None, "x = 1\n"]


def test_large_vocabulary_uses_uint32(tmp_path: Path) -> None:
    vocab = {f"w{i}": i for i in range(70_000)}
    vocab["<|eos|>"] = 70_000
    vocab["[UNK]"] = 70_001
    backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(["<|eos|>"])
    tok = Tokenizer(backend)
    assert token_dtype(tok.vocab_size) == "uint32"
    assert token_dtype(65_536) == "uint16"
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "w1 w69999 w65536"}) + "\n")
    source = SourceConfig(kind="files", paths=(str(path),), validation_fraction=0.0)
    manifest = prepare_shards(source, tok, tmp_path / "out")
    assert manifest.dtype == "uint32"
    assert ShardSet(tmp_path / "out").tokens(0).tolist() == [1, 69_999, 65_536, 70_000]
    assert os.path.getsize(tmp_path / "out" / "train" / "shard_00000.bin") == 16


def _labels(source: SourceConfig, split: str) -> list[str]:
    """Source labels of the kept documents of ``split``, in order (a reference, no prepare)."""
    return [
        label
        for text, label in iter_labelled(source)
        if text and text.strip() and split_of(text, source.validation_fraction) == split
    ]


def test_every_document_keeps_its_source_label(
    prepared: tuple[Path, Manifest], arithmetic_source: SourceConfig
) -> None:
    out, manifest = prepared
    first_seen = list(dict.fromkeys(label for _, label in iter_labelled(arithmetic_source)))
    assert manifest.source_names == first_seen
    assert sorted(first_seen) == ["add", "mul", "sub"]
    for split in ("train", "validation"):
        shards = ShardSet(out, split)
        assert shards.source_ids.dtype == np.uint8
        assert shards.source_names == first_seen
        got = [shards.source_names[i] for i in shards.source_ids.tolist()]
        assert got == _labels(arithmetic_source, split)
        for info in manifest.split(split).shards:
            ids = np.load(out / split / f"{info.name}.src.npy")
            assert ids.shape == (info.num_documents,)


def _make_legacy(out: Path, keep: dict[str, int] | None) -> None:
    """Turn ``out`` into a directory as prepared before source ids (optionally interrupted after
    the first ``keep[split]`` shards of each split): no ``.src.npy``, no source fields."""
    raw = json.loads((out / "manifest.json").read_text())
    del raw["source_names"]
    for split, info in raw["splits"].items():
        shards = info["shards"][: keep[split]] if keep is not None else info["shards"]
        for dropped in info["shards"][len(shards) :]:
            for ext in ("bin", "idx.npy"):
                (out / split / f"{dropped['name']}.{ext}").unlink()
        for shard in info["shards"]:
            (out / split / f"{shard['name']}.src.npy").unlink()
        for shard in shards:
            del shard["source_sha256"]
        info["shards"] = shards
    if keep is not None:
        raw |= {"complete": False, "raw_documents": 0}
    (out / "manifest.json").write_text(json.dumps(raw))


def test_directory_without_source_ids_reads_as_one_source_until_prepared_again(
    copy_of: Path,
    prepared: tuple[Path, Manifest],
    tokenizer: Tokenizer,
    arithmetic_source: SourceConfig,
) -> None:
    _make_legacy(copy_of, keep=None)
    legacy = ShardSet(copy_of, "validation")
    assert legacy.source_names == ["all"]
    assert not legacy.source_ids.any()
    batch = next(iter(PackedLoader(copy_of, split="validation", seq_len=16, batch_size=2)))
    assert batch.source_ids is not None
    assert torch.equal(batch.source_ids >= 0, batch.document_ids >= 0)
    assert set(batch.source_ids[batch.document_ids >= 0].tolist()) == {0}
    tokens_before = {k: v for k, v in _snapshot(copy_of).items() if not k.endswith(".src.npy")}
    upgraded = prepare_shards(arithmetic_source, tokenizer, copy_of, shard_tokens=5000)
    assert upgraded == prepared[1], "the same manifest as a fresh preparation"
    after = _snapshot(copy_of)
    assert {k: after[k] for k in tokens_before if k != "manifest.json"} == {
        k: v for k, v in tokens_before.items() if k != "manifest.json"
    }, "token shards and offsets are not rewritten"
    for split in ("train", "validation"):
        fresh = ShardSet(prepared[0], split)
        assert np.array_equal(ShardSet(copy_of, split).source_ids, fresh.source_ids)
    again = _snapshot(copy_of)
    prepare_shards(arithmetic_source, tokenizer, copy_of, shard_tokens=5000)
    assert _snapshot(copy_of) == again, "a second run writes nothing"


def test_interrupted_directory_without_source_ids_resumes_with_the_same_ids(
    copy_of: Path,
    prepared: tuple[Path, Manifest],
    tokenizer: Tokenizer,
    arithmetic_source: SourceConfig,
) -> None:
    _make_legacy(copy_of, keep={"train": 2, "validation": 0})
    finished = prepare_shards(arithmetic_source, tokenizer, copy_of, shard_tokens=5000)
    assert finished == prepared[1]
    for split in ("train", "validation"):
        for shard in finished.split(split).shards:
            for ext in ("bin", "src.npy"):
                name = f"{split}/{shard.name}.{ext}"
                assert (copy_of / name).read_bytes() == (prepared[0] / name).read_bytes()


def test_source_changed_under_a_directory_without_ids_is_refused(
    copy_of: Path,
    tokenizer: Tokenizer,
    arithmetic_source: SourceConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _make_legacy(copy_of, keep=None)
    real = prepare_module.iter_labelled

    def fewer(source: SourceConfig) -> Iterator[tuple[str | None, str]]:
        for i, item in enumerate(real(source)):
            if i < 3000:
                yield item

    monkeypatch.setattr(prepare_module, "iter_labelled", fewer)
    with pytest.raises(ShardError, match=r"source no longer has the documents of train/shard_0"):
        prepare_shards(arithmetic_source, tokenizer, copy_of, shard_tokens=5000)
    assert read_manifest(copy_of).source_names is None  # type: ignore[union-attr]


def test_labels_beyond_the_cap_share_other(
    tmp_path: Path, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prepare_module, "MAX_SOURCES", 4)
    path = tmp_path / "docs.jsonl"
    labels = ["a", "b", "a", "c", "d", "e", "b", "d"]
    rows = [{"text": f"doc {i}", "site": lab} for i, lab in enumerate(labels)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = SourceConfig(
        kind="files", paths=(str(path),), source_field="site", validation_fraction=0.0
    )
    manifest = prepare_shards(source, tokenizer, tmp_path / "out")
    assert manifest.source_names == ["a", "b", "c", "other"]
    shards = ShardSet(tmp_path / "out", "train")
    got = [shards.source_names[i] for i in shards.source_ids.tolist()]
    assert got == ["a", "b", "a", "c", "other", "other", "b", "other"]
