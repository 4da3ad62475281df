"""scripts/push_to_hub.py: folder preparation, model card, upload calls, failures keep files.

Nothing touches the network: uploads go to a recording fake ``HfApi``, and the failure test runs
the real client with HF_HUB_OFFLINE=1.
"""

import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.unit.interop.tiny_hf import save_hf_model, save_tokenizer
from zmaj_lm.interop import convert_from_hf

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_SECRETtokenValue123"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "push_script", ROOT / "scripts" / "push_to_hub.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.setup_logging = lambda *args, **kwargs: None
    return module


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    save_hf_model("qwen3", tmp_path / "hf")
    save_tokenizer(tmp_path / "hf")
    convert_from_hf(tmp_path / "hf", tmp_path / "run")
    (tmp_path / "run" / "summary.json").write_text(json.dumps({"val_loss": 3.25, "step": 100}))
    return tmp_path / "run"


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


class FakeApi:
    calls: list[tuple[str, dict[str, Any]]] = []  # noqa: RUF012
    fail_with: Exception | None = None

    def create_repo(self, repo_id: str, **kwargs: Any) -> None:
        FakeApi.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        if FakeApi.fail_with is not None:
            raise FakeApi.fail_with

    def create_branch(self, repo_id: str, **kwargs: Any) -> None:
        FakeApi.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs: Any) -> str:
        FakeApi.calls.append(("upload_folder", kwargs))
        return "https://huggingface.co/org/name/commit/abc"


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> type[FakeApi]:
    import huggingface_hub

    FakeApi.calls = []
    FakeApi.fail_with = None
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return FakeApi


def test_dry_run_prepares_folder_with_model_card(
    script: ModuleType, ckpt: Path, fake_api: type[FakeApi], capsys: Any
) -> None:
    folder = ckpt.parent / "upload"
    args = ["--checkpoint", str(ckpt), "--repo-id", "org/name", "--out", str(folder)]
    assert script.main([*args, "--dry-run", "--dataset", "org/corpus"]) == 0
    assert fake_api.calls == []
    assert "nothing uploaded" in capsys.readouterr().out
    for name in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "conversion_report.json",
        "README.md",
    ):
        assert (folder / name).is_file(), name
    card = (folder / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["license"] == "apache-2.0"
    assert meta["library_name"] == "transformers"
    assert meta["datasets"] == ["org/corpus"]
    assert {"zmaj-lm", "qwen3"} <= set(meta["tags"])
    assert "base_model" not in meta
    assert "## Training config" in body
    assert "n_layers: 2" in body
    assert "| val_loss | 3.25 |" in body
    assert "passed, max absolute difference" in body
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    assert type(model).__name__ == "Qwen3ForCausalLM"


def test_upload_calls_create_repo_then_upload_folder(
    script: ModuleType, ckpt: Path, fake_api: type[FakeApi]
) -> None:
    folder = ckpt.parent / "upload"
    args = ["--checkpoint", str(ckpt), "--repo-id", "org/name", "--out", str(folder)]
    assert script.main([*args, "--private", "--revision", "v1", "--base-model", "org/base"]) == 0
    names = [name for name, _ in fake_api.calls]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    assert fake_api.calls[0][1]["private"] is True
    upload = fake_api.calls[2][1]
    assert upload["folder_path"] == str(folder)
    assert upload["repo_id"] == "org/name"
    assert upload["revision"] == "v1"
    assert yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])["base_model"] == (
        "org/base"
    )


def test_auth_failure_is_clear_keeps_files_and_hides_token(
    script: ModuleType,
    ckpt: Path,
    fake_api: type[FakeApi],
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    fake_api.fail_with = PermissionError(f"401 Unauthorized for token {TOKEN}")
    folder = ckpt.parent / "upload"
    before = _digest(ckpt)
    args = ["--checkpoint", str(ckpt), "--repo-id", "org/name", "--out", str(folder)]
    assert script.main(args) == 1
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err
    (line,) = [x for x in captured.err.splitlines() if x.startswith("error:")]
    assert line.startswith("error: push to org/name failed: PermissionError: 401")
    assert "is intact" in line
    assert _digest(ckpt) == before
    assert (folder / "model.safetensors").is_file()


def test_offline_network_failure_keeps_files(
    script: ModuleType, ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    folder = ckpt.parent / "upload"
    before = _digest(ckpt)
    args = ["--checkpoint", str(ckpt), "--repo-id", "org/name", "--out", str(folder)]
    assert script.main(args) == 1
    captured = capsys.readouterr()
    (line,) = [x for x in captured.err.splitlines() if x.startswith("error:")]
    assert line.startswith("error: push to org/name failed:")
    assert TOKEN not in captured.out + captured.err
    assert _digest(ckpt) == before
    prepared = _digest(folder)
    assert "README.md" in prepared
    assert "model.safetensors" in prepared


def test_bad_repo_id_exits_2(script: ModuleType, ckpt: Path, capsys: Any) -> None:
    assert script.main(["--checkpoint", str(ckpt), "--repo-id", "no-slash"]) == 2
    assert capsys.readouterr().err == "error: --repo-id: 'no-slash' is not ORG/NAME\n"
