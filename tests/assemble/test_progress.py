"""Every long step of a build shows progress: ingest, decoding, the copy search, packing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from covid19_images.assemble import build as build_module
from covid19_images.assemble.build import build
from covid19_images.audit import report as report_module
from covid19_images.dedup import near as near_module
from covid19_images.loaders import packed as packed_module
from covid19_images.process import executor as executor_module

T = TypeVar("T")


@pytest.mark.parametrize("progress", [True, False])
def test_each_long_step_reports_its_progress(
    shared_sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, progress: bool
) -> None:
    from covid19_images import progress as progress_module

    shown: dict[str, int] = {}
    real = progress_module.track

    def spy(items: Iterable[T], total: int | None, description: str, enabled: bool = True):
        def counted() -> Iterator[T]:
            for item in real(items, total, description, enabled=False):
                if enabled:
                    shown[description] = shown.get(description, 0) + 1
                yield item

        return counted()

    for module in (build_module, near_module, packed_module, report_module, executor_module):
        monkeypatch.setattr(module, "track", spy)

    build(
        "xray-covid",
        out=tmp_path / "out",
        mirror=shared_sources,
        root=tmp_path / "root",
        sources=["figure1", "covid19-image-dataset"],
        progress=progress,
        fetch=False,
        workers=1,
    )

    if not progress:
        assert shown == {}
        return
    assert shown["reading the sources' metadata"] == 2
    assert shown["decoding images"] > 50
    assert shown["comparing candidate pairs"] > 0  # the two collections share copies
    assert sum(n for d, n in shown.items() if d.startswith("packing ")) > 50
