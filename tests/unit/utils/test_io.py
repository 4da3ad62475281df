"""Atomic writes: a failure mid-write leaves the previous content intact and no temp files."""

from pathlib import Path

import pytest

from zmaj_lm.utils.io import atomic_dir, atomic_path, atomic_write_json, atomic_write_text


def test_failed_write_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    atomic_write_text(target, "old")

    def interrupted_write() -> None:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        interrupted_write()
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_json_write(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "a" / "b.json", {"x": 1})
    assert (tmp_path / "a" / "b.json").read_text() == '{\n  "x": 1\n}\n'


def test_directory_replace_is_all_or_nothing(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with atomic_dir(target) as d:
        (d / "w").write_text("1")

    def interrupted_save() -> None:
        with atomic_dir(target) as d:
            (d / "w").write_text("2")
            raise OSError("no space left on device")

    with pytest.raises(OSError, match="no space"):
        interrupted_save()
    assert (target / "w").read_text() == "1"
    with atomic_dir(target) as d:
        (d / "w").write_text("3")
    assert (target / "w").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
