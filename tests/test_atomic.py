"""Files written whole or not at all, keeping their permissions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from covid19_images.atomic import write_bytes, write_json, write_with


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    write_bytes(target, b"old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_with(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_a_rewritten_file_keeps_its_mode_and_a_new_one_follows_the_umask(tmp_path: Path) -> None:
    kept = tmp_path / "datasheet.md"
    kept.write_text("x")
    kept.chmod(0o640)
    write_bytes(kept, b"y")
    assert kept.stat().st_mode & 0o777 == 0o640
    write_bytes(tmp_path / "new.md", b"z")
    with (tmp_path / "plain.md").open("w") as fh:  # what open() gives under this umask
        fh.write("z")
    assert (tmp_path / "new.md").stat().st_mode == (tmp_path / "plain.md").stat().st_mode


def test_json_refuses_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_json(tmp_path / "m.json", {"auroc": float("nan")})
    assert not list(tmp_path.iterdir())
    write_json(tmp_path / "m.json", {"auroc": None})
    assert json.loads((tmp_path / "m.json").read_text()) == {"auroc": None}
