"""Shard preparation: round trip, idempotence, crash safety, repair, and refusals."""

import json
import os
import shutil
from pathlib import Path

import pytest
import tokenizers
from tokenizers import models, pre_tokenizers

from zmaj_lm.config.data import SourceConfig
from zmaj_lm.data import prepare as prepare_module
from zmaj_lm.data.errors import ShardError
from zmaj_lm.data.prepare import prepare_shards
from zmaj_lm.data.shards import Manifest, ShardSet, read_manifest, split_stats, token_dtype
from zmaj_lm.data.sources import iter_texts
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


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "delete", "delete_index"])
def test_damaged_shard_is_refused_by_loader_then_rebuilt(
    copy_of: Path, tokenizer: Tokenizer, arithmetic_source: SourceConfig, damage: str
) -> None:
    out = copy_of
    good = _snapshot(out)
    target = out / "train" / "shard_00002.bin"
    original = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(original[:-3])
        message = "shard_00002.bin: truncated"
    elif damage == "corrupt":
        target.write_bytes(original[:10] + bytes([original[10] ^ 1]) + original[11:])
        message = "shard_00002.bin: corrupt"
    elif damage == "delete":
        target.unlink()
        message = "shard_00002.bin: missing"
    else:
        (out / "train" / "shard_00002.idx.npy").unlink()
        message = "shard_00002.idx.npy: missing"
    with pytest.raises(ShardError, match=message):
        ShardSet(out, "train")
    prepare_shards(arithmetic_source, tokenizer, out, shard_tokens=5000)
    assert target.read_bytes() == original
    after = _snapshot(out)
    changed = {k for k in good if good[k] != after.get(k)}
    assert changed <= {"train/shard_00002.bin", "train/shard_00002.idx.npy"}
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
