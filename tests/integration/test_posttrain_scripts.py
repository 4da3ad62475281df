"""The post-training scripts: bad input is one line on stderr with status 2, no traceback; the
audit marks supervised text and refuses examples with nothing to learn."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.posttrain.conftest import save_init

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def init(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_init(tmp_path_factory.mktemp("init"), n_layers=1, n_heads=2)


def test_unknown_field_is_one_line_exit_2(init: Path, tmp_path: Path) -> None:
    result = _run("scripts/grpo.py", "--init", str(init), "--out", str(tmp_path), "lossy=1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: <overrides>: lossy: unknown field"


def test_bad_data_file_names_file_and_field(init: Path, tmp_path: Path) -> None:
    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "answer": "x"}) + "\n")
    result = _run(
        "scripts/sft.py",
        "--init",
        str(init),
        "--out",
        str(tmp_path / "out"),
        "data.kind=files",
        f"data.paths=[{data}]",
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert str(data) in line
    assert "line 1" in line
    assert "completion: missing" in line


def test_missing_init_is_exit_2(tmp_path: Path) -> None:
    result = _run("scripts/dpo.py", "--init", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "not a checkpoint" in result.stderr


def test_audit_marks_assistant_text_and_refuses_empty(init: Path, tmp_path: Path) -> None:
    ok = _run("scripts/audit_sft.py", "--init", str(init), "-n", "2", "data.num_examples=50")
    assert ok.returncode == 0, ok.stderr
    assert "=<|end|><|assistant|>[[" in ok.stdout
    assert "<|end|>]]" in ok.stdout
    assert "supervised" in ok.stdout

    data = tmp_path / "chats.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {
            "messages": [
                {"role": "user", "content": "x" * 80},
                {"role": "assistant", "content": "z"},
            ]
        },
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad = _run(
        "scripts/audit_sft.py",
        "--init",
        str(init),
        "data.kind=files",
        f"data.paths=[{data}]",
        "data.validation_fraction=0",
        "loader.seq_len=32",
    )
    assert bad.returncode == 2
    assert "refused: example 1: no supervised token within 32" in bad.stderr
    assert "[[yo<|end|>]]" in bad.stdout
