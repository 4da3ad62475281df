"""Data scripts end to end: train a tokenizer, prepare shards, load batches; bad input exits 2."""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from zmaj_lm.data.loader import PackedLoader
from zmaj_lm.data.shards import read_manifest, shard_problem
from zmaj_lm.data.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
SYNTHETIC = [
    "--source",
    "synthetic",
    "--num-documents",
    "300",
    "--set",
    "source.synthetic.document_length=200",
]


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )


def test_train_tokenizer_then_prepare_then_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tok_dir = tmp_path / "tok"
    train = _script("train_tokenizer")
    assert train.main([*SYNTHETIC, "--vocab-size", "300", "--out", str(tok_dir)]) == 0
    assert "300 ids" in capsys.readouterr().out
    out = tmp_path / "data"
    args = [*SYNTHETIC, "--out", str(out), "--tokenizer", str(tok_dir), "--shard-tokens", "8000"]
    prepare = _script("prepare_data")
    assert prepare.main(args) == 0
    manifest = read_manifest(out)
    assert manifest is not None
    assert manifest.complete
    assert manifest.tokenizer_fingerprint == Tokenizer.load(tok_dir).fingerprint
    assert manifest.split("train").num_documents + manifest.split("validation").num_documents == 300
    assert len(manifest.split("train").shards) > 1
    loader = PackedLoader(out, seq_len=64, batch_size=4, packing="concat")
    assert next(iter(loader)).input_ids.shape == (4, 64)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert prepare.main(args) == 0
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_bad_input_is_one_line_and_status_2_without_traceback(tmp_path: Path) -> None:
    result = _run(
        "prepare_data",
        "--source",
        "files",
        "--paths",
        str(tmp_path / "x.jsonl"),
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'x.jsonl'}: no such file"


def _bad(script: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert _script(script).main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_bad_inputs_name_file_field_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"body": "hello"}) + "\n")
    files = ["--source", "files", "--paths", str(docs)]
    out = ["--out", str(tmp_path / "out")]
    line = _bad("prepare_data", [*files, *out], capsys)
    assert line == f"error: {docs}: text_field 'text' not found (columns: body)"
    line = _bad("prepare_data", [*files, *out, "--tokenizer", str(tmp_path / "none.json")], capsys)
    assert line == f"error: {tmp_path / 'none.json'}: no such tokenizer file"
    line = _bad(
        "train_tokenizer",
        [*files, "--text-field", "body", "--vocab-size", "10", "--out", str(tmp_path)],
        capsys,
    )
    assert line == "error: <arguments>: vocab_size: Input should be greater than or equal to 258"
    line = _bad(
        "prepare_data", [*files, *out, "--set", "source.synthetic.alphabet_size=100"], capsys
    )
    assert line.startswith("error: <arguments>: source.synthetic.alphabet_size: ")
    line = _bad("prepare_data", [*files, *out, "--set", "colour=red"], capsys)
    assert line == "error: <arguments>: colour: unknown field"


def test_shards_of_another_tokenizer_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare = _script("prepare_data")
    out = tmp_path / "out"
    base = [*SYNTHETIC, "--out", str(out), "--vocab-size", "280"]
    assert prepare.main(base) == 0
    other = tmp_path / "other"
    assert (
        _script("train_tokenizer").main([*SYNTHETIC, "--vocab-size", "290", "--out", str(other)])
        == 0
    )
    capsys.readouterr()
    line = _bad("prepare_data", [*base, "--tokenizer", str(other)], capsys)
    assert "manifest.json: shards were prepared with tokenizer" in line
    assert "use another output directory or --overwrite" in line
    assert prepare.main([*base, "--tokenizer", str(other), "--overwrite"]) == 0


def test_truncated_shard_is_rebuilt_by_a_rerun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare = _script("prepare_data")
    out = tmp_path / "out"
    args = [*SYNTHETIC, "--out", str(out), "--vocab-size", "280", "--shard-tokens", "5000"]
    assert prepare.main(args) == 0
    shard = out / "train" / "shard_00001.bin"
    good = shard.read_bytes()
    shard.write_bytes(good[:100])
    with pytest.raises(Exception, match=r"shard_00001.bin: truncated"):
        PackedLoader(out, seq_len=32, batch_size=2)
    assert prepare.main(args) == 0
    assert shard.read_bytes() == good


@pytest.mark.slow
def test_stdlib_pipeline_through_the_script(tmp_path: Path) -> None:
    """The pretraining recipe's data step: tokenizer + shards of the whole stdlib corpus."""
    out = tmp_path / "stdlib"
    result = _run("prepare_data", "--source", "stdlib", "--out", str(out))
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(out)
    assert manifest is not None
    train, val = manifest.split("train"), manifest.split("validation")
    assert train.num_tokens > 2_000_000
    assert val.num_documents > 10
    assert 2.5 < (train.num_bytes / train.num_tokens) < 6, "a 4096-id BPE compresses Python"
    loader = PackedLoader(
        out, seq_len=256, batch_size=8, tokenizer_fingerprint=manifest.tokenizer_fingerprint
    )
    assert loader.efficiency > 0.99
    batch = next(iter(loader))
    assert batch.num_tokens > 8 * 250


@pytest.mark.slow
def test_killed_preparation_resumes_to_the_same_shards(tmp_path: Path) -> None:
    """SIGKILL in the middle of preparation: listed shards stay valid, a re-run completes and
    produces exactly what an uninterrupted run does."""
    tok_dir = tmp_path / "tok"
    corpus = ["--source", "synthetic", "--num-documents", "6000"]
    assert (
        _script("train_tokenizer").main([*corpus, "--vocab-size", "300", "--out", str(tok_dir)])
        == 0
    )
    args = [*corpus, "--tokenizer", str(tok_dir), "--shard-tokens", "50000"]
    killed = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "scripts" / "prepare_data.py"), *args, "--out", str(killed)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            manifest = read_manifest(killed) if (killed / "manifest.json").is_file() else None
            if manifest is not None and len(manifest.split("train").shards) >= 3:
                break
            assert proc.poll() is None, "preparation finished before it could be killed"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    partial = read_manifest(killed)
    assert partial is not None
    assert not partial.complete
    for split in ("train", "validation"):
        for shard in partial.split(split).shards:
            assert shard_problem(killed / split, shard) is None
    prepare = _script("prepare_data")
    assert prepare.main([*args, "--out", str(killed)]) == 0
    clean = tmp_path / "clean"
    assert prepare.main([*args, "--out", str(clean)]) == 0
    assert read_manifest(killed) == read_manifest(clean)
    assert not list(killed.rglob("*.tmp"))
    for path in clean.rglob("*.bin"):
        assert (killed / path.relative_to(clean)).read_bytes() == path.read_bytes()
