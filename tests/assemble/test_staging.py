"""Replacing a dataset folder: the earlier one and its exports survive a failed swap."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from covid19_images.assemble import folder as folder_module
from covid19_images.assemble.folder import EXPORTS, MANIFEST, staging


def _dataset(final: Path, text: str) -> None:
    final.mkdir(parents=True)
    (final / MANIFEST).write_text(text, encoding="utf-8")
    (final / EXPORTS / "imagefolder").mkdir(parents=True)
    (final / EXPORTS / "imagefolder" / "a.png").write_text("export", encoding="utf-8")


def test_a_completed_swap_keeps_the_exports_and_leaves_nothing_beside(tmp_path: Path) -> None:
    final = tmp_path / "out" / "xray-covid"
    _dataset(final, "old")
    with staging(final) as tmp:
        (tmp / MANIFEST).write_text("new", encoding="utf-8")
    assert (final / MANIFEST).read_text(encoding="utf-8") == "new"
    assert (final / EXPORTS / "imagefolder" / "a.png").read_text(encoding="utf-8") == "export"
    assert [p.name for p in final.parent.iterdir()] == ["xray-covid"]


def test_a_failed_rename_into_place_puts_the_earlier_dataset_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "out" / "xray-covid"
    _dataset(final, "old")
    real_rename = Path.rename

    def failing(self: Path, target: Path) -> Path:  # type: ignore[override]
        if Path(target) == final and ".partial-" in self.name:
            raise OSError("disk full")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError, match="disk full"), staging(final) as tmp:
        (tmp / MANIFEST).write_text("new", encoding="utf-8")

    assert (final / MANIFEST).read_text(encoding="utf-8") == "old"
    assert (final / EXPORTS / "imagefolder" / "a.png").read_text(encoding="utf-8") == "export"
    assert [p.name for p in final.parent.iterdir()] == ["xray-covid"]


def test_an_interrupt_while_deleting_the_earlier_one_keeps_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "out" / "xray-covid"
    _dataset(final, "old")
    real_rmtree = shutil.rmtree

    def interrupted(path: Path, *args: object, **kwargs: object) -> None:
        if ".old-" in Path(path).name:
            raise KeyboardInterrupt
        real_rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(folder_module.shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt), staging(final) as tmp:
        (tmp / MANIFEST).write_text("new", encoding="utf-8")
    monkeypatch.setattr(folder_module.shutil, "rmtree", real_rmtree)

    assert (final / MANIFEST).read_text(encoding="utf-8") == "new"
    assert (final / EXPORTS / "imagefolder" / "a.png").read_text(encoding="utf-8") == "export"
    # What is left of the earlier one goes with the next build of that folder.
    (stale,) = [p for p in final.parent.iterdir() if p.name != "xray-covid"]
    renamed = stale.with_name(stale.name.rsplit("-", 1)[0] + "-999999999")
    stale.rename(renamed)  # as if the process that left it had ended
    with staging(final) as tmp:
        (tmp / MANIFEST).write_text("newer", encoding="utf-8")
    assert [p.name for p in final.parent.iterdir()] == ["xray-covid"]


def test_a_failed_build_leaves_the_earlier_dataset_untouched(tmp_path: Path) -> None:
    final = tmp_path / "out" / "xray-covid"
    _dataset(final, "old")
    with pytest.raises(RuntimeError), staging(final) as tmp:
        (tmp / MANIFEST).write_text("half", encoding="utf-8")
        raise RuntimeError("a step failed")
    assert (final / MANIFEST).read_text(encoding="utf-8") == "old"
    assert [p.name for p in final.parent.iterdir()] == ["xray-covid"]
