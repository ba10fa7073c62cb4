"""A small dataset built once from the real upstream files, shared by the loader tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from covid19_images.assemble.build import BuildResult, build
from covid19_images.process.executor import LocalExecutor


@pytest.fixture(scope="session")
def xray_dataset(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """``xray-covid`` from three X-ray sources of ../shared/sources (every class present)."""
    work = tmp_path_factory.mktemp("loaders")
    return build(
        "xray-covid",
        out=work / "out",
        mirror=shared_sources,
        root=work / "root",
        sources=["figure1", "zhanglab", "covid19-image-dataset"],
        executor=LocalExecutor(workers=2, progress=False),
        progress=False,
    )
