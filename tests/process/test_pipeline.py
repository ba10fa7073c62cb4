"""The processed layer: content-addressed cache, rebuilds that redo only what changed, problems."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from covid19_images.process.executor import LocalExecutor
from covid19_images.process.pipeline import output_dir, process_records
from covid19_images.records import Record
from covid19_images.sources import ingest


class CountingExecutor:
    """The local executor, counting how many items each step hands it."""

    def __init__(self, workers: int = 1) -> None:
        self.inner = LocalExecutor(workers=workers, progress=False)
        self.workers = workers
        self.items = 0

    def map(
        self, fn: Callable[[Any], Any], items: Sequence[Any], description: str = ""
    ) -> Iterator[Any]:
        self.items += len(items)
        return self.inner.map(fn, items, description)


def _image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (300, 260), dtype=np.uint8)).save(path)


def _records(root: Path, names: list[str]) -> list[Record]:
    return [Record(source="toy", path_raw=n, modality="XR") for n in names]


def test_real_images_are_processed_and_a_rebuild_decodes_nothing(
    shared_sources: Path, tmp_path: Path
) -> None:
    result = ingest("ieee8023", mirror=shared_sources)
    first = CountingExecutor(workers=2)
    kept, log = process_records(
        list(result.records), {"ieee8023": result.path}, tmp_path, executor=first
    )
    assert (
        first.items
        == len(result.records)
        == len(kept) + sum(1 for p in log if p.action == "skipped")
    )
    for record in kept:
        folder = output_dir(tmp_path, record.processed_key or "")
        assert Image.open(folder / "224.png").size == (224, 224)
        assert Image.open(folder / "512.png").size == (512, 512)
        assert record.width and record.height and record.phash and record.sha256_file
    # Upstream has files whose content is PNG under a .jpg name: kept, and reported.
    mismatched = [p for p in log if p.kind == "wrong-extension"]
    assert mismatched and all(p.action == "kept" for p in mismatched)

    again = CountingExecutor(workers=1)
    kept2, _ = process_records(
        list(result.records), {"ieee8023": result.path}, tmp_path, executor=again
    )
    assert again.items == 0
    assert [r.phash for r in kept2] == [r.phash for r in kept]


def test_only_changed_files_are_redone_and_moved_files_reuse_their_outputs(
    tmp_path: Path,
) -> None:
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    raw.mkdir()
    for i in range(4):
        _image(raw / f"{i}.png", i)
    records = _records(raw, [f"{i}.png" for i in range(4)])
    process_records(records, {"toy": raw}, cache, executor=CountingExecutor())
    folders = {p for p in cache.glob("*/*") if p.is_dir()}
    assert len(folders) == 4

    _image(raw / "2.png", 99)  # new content
    os.utime(raw / "3.png")  # touched, same bytes
    counter = CountingExecutor()
    kept, _ = process_records(
        _records(raw, [f"{i}.png" for i in range(4)]), {"toy": raw}, cache, executor=counter
    )
    assert counter.items == 2  # the changed and the touched file are read again
    assert len({p for p in cache.glob("*/*") if p.is_dir()}) == 5  # one new output only

    (raw / "0.png").rename(raw / "moved.png")
    counter = CountingExecutor()
    moved = process_records(_records(raw, ["moved.png"]), {"toy": raw}, cache, executor=counter)
    assert counter.items == 1
    assert moved[0][0].processed_key == kept[0].processed_key
    assert len({p for p in cache.glob("*/*") if p.is_dir()}) == 5


def test_bad_files_become_problems_and_the_rest_goes_on(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    _image(raw / "good.png", 1)
    (raw / "empty.png").write_bytes(b"")
    (raw / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    Image.open(raw / "good.png").save(raw / "png-named.jpg", format="PNG")
    names = ["good.png", "empty.png", "garbage.jpg", "png-named.jpg", "absent.png"]

    kept, log = process_records(
        _records(raw, names), {"toy": raw}, tmp_path / "cache", executor=CountingExecutor()
    )

    assert [r.path_raw for r in kept] == ["good.png", "png-named.jpg"]
    assert sorted((p.file, p.kind, p.action) for p in log) == [
        ("absent.png", "unreadable-file", "skipped"),
        ("empty.png", "empty-file", "skipped"),
        ("garbage.jpg", "unreadable-file", "skipped"),
        ("png-named.jpg", "wrong-extension", "kept"),
    ]
    # Bad files are remembered too: an unchanged rebuild does not try them again.
    counter = CountingExecutor()
    process_records(_records(raw, names), {"toy": raw}, tmp_path / "cache", executor=counter)
    assert counter.items == 0


def test_one_and_two_workers_agree(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(12):
        _image(raw / f"{i}.png", i)
    names = [f"{i}.png" for i in range(12)]
    one, _ = process_records(
        _records(raw, names), {"toy": raw}, tmp_path / "c1", executor=CountingExecutor(1)
    )
    two, _ = process_records(
        _records(raw, names), {"toy": raw}, tmp_path / "c2", executor=CountingExecutor(2)
    )
    assert [(r.sha256_pixels, r.phash, r.processed_key) for r in one] == [
        (r.sha256_pixels, r.phash, r.processed_key) for r in two
    ]


def test_monochrome1_images_are_inverted_and_keyed_apart(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    ramp = np.tile(np.linspace(100, 4000, 300).astype(np.uint16), (260, 1))
    Image.fromarray(ramp).save(raw / "m1.png")
    plain = Record(source="toy", path_raw="m1.png", modality="CR")
    inverted = Record(
        source="toy",
        path_raw="m1.png",
        modality="CR",
        attributes={"photometric_interpretation": "MONOCHROME1"},
    )
    (a,), _ = process_records([plain], {"toy": raw}, tmp_path / "c", executor=CountingExecutor())
    (b,), _ = process_records([inverted], {"toy": raw}, tmp_path / "c", executor=CountingExecutor())
    assert a.processed_key != b.processed_key
    left = np.asarray(Image.open(output_dir(tmp_path / "c", a.processed_key or "") / "224.png"))
    right = np.asarray(Image.open(output_dir(tmp_path / "c", b.processed_key or "") / "224.png"))
    assert left[:, 0].mean() < left[:, -1].mean()  # dark to bright
    assert right[:, 0].mean() > right[:, -1].mean()  # bright to dark once inverted
