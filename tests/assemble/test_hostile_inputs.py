"""Hostile inputs never stop an X-ray build and are never silent: each is one problems.csv row.

The mirrors are small copies of real upstream files (``../shared/sources``) made in tmp_path, with
the hostile file or folder added: a decompression bomb, broken links, an unreadable folder, names
that differ only in letter case, images of impossible size, a file that is not an image.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from covid19_images.assemble.build import BuildResult, build
from covid19_images.cli import app
from covid19_images.problems import ProblemLog
from covid19_images.process.executor import LocalExecutor
from covid19_images.process.image import MAX_PIXELS
from covid19_images.sources.base import FileIndex

DATASET = "covid19-image-dataset"
TOP = "Covid19-dataset"


def _image_dataset(mirror: Path, shared: Path) -> Path:
    """The real train/Covid and train/Normal images of covid19-image-dataset (16 files), and
    the other (empty) folders its layout requires; its ``Covid19-dataset`` folder."""
    top = mirror / DATASET / TOP
    for folder in ("train/Covid", "train/Normal"):
        shutil.copytree(shared / DATASET / TOP / folder, top / folder)
    for folder in ("train/Viral Pneumonia", "test/Covid", "test/Normal", "test/Viral Pneumonia"):
        (top / folder).mkdir(parents=True)
    return top


def _real(shared: Path, rel: str) -> bytes:
    return (shared / DATASET / TOP / rel).read_bytes()


def _build(tmp_path: Path, sources: list[str], name: str = "", **options: object) -> BuildResult:
    return build(
        "xray-covid",
        sources=sources,
        out=tmp_path / f"out{name}",
        mirror=tmp_path / "mirror",
        root=tmp_path / f"root{name}",
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
        dicom=False,
        fetch=False,
        **options,  # type: ignore[arg-type]
    )


def _problems(result: BuildResult) -> pd.DataFrame:
    return pd.read_csv(result.path / "problems.csv", dtype=str, keep_default_na=False)


def _rows(problems: pd.DataFrame, kind: str) -> list[tuple[str, str, str]]:
    """(source, file, action) of every row of ``kind``, sorted."""
    chosen = problems[problems["kind"] == kind]
    return sorted(zip(chosen["source"], chosen["file"], chosen["action"], strict=True))


def _detail(problems: pd.DataFrame, file: str, kind: str) -> str:
    chosen = problems[(problems["file"] == file) & (problems["kind"] == kind)]
    assert len(chosen) == 1, problems.to_string()
    return str(chosen["detail"].iloc[0])


def _train_files(top: Path) -> set[str]:
    return {
        p.relative_to(top.parent).as_posix()
        for p in top.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def _nothing_left_behind(result: BuildResult) -> None:
    assert not [p.name for p in result.path.parent.iterdir() if p.name.startswith(".")]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header that declares ``width`` x ``height`` 8-bit grey pixels, with a tiny
    IDAT: a few dozen bytes that would take width x height bytes to decode."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"".join(
        (b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header), _chunk(b"IDAT", idat), _chunk(b"IEND", b""))
    )


def bomb_jpeg(real: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOFn) is rewritten to declare ``width`` x ``height``."""
    data = bytearray(real)
    at = 2
    while at < len(data):
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2 : at + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            data[at + 5 : at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        at += 2 + length
    raise AssertionError("no frame header in the JPEG")


# 1. Decompression bombs ----------------------------------------------------------------------


def test_decompression_bombs_are_too_large_rows(tmp_path: Path, shared_sources: Path) -> None:
    top = _image_dataset(tmp_path / "mirror", shared_sources)
    covid = top / "train" / "Covid"
    (covid / "bomb.png").write_bytes(bomb_png(40_000, 40_000))  # 1.6 x 10^9 pixels
    real = _real(shared_sources, "train/Covid/COVID-00020.jpg")
    (covid / "bomb.jpg").write_bytes(bomb_jpeg(real, 60_000, 60_000))  # 3.6 x 10^9 pixels
    pillow_limit = Image.MAX_IMAGE_PIXELS

    result = _build(tmp_path, [DATASET])

    problems = _problems(result)
    assert _rows(problems, "too-large") == [
        (DATASET, f"{TOP}/train/Covid/bomb.jpg", "skipped"),
        (DATASET, f"{TOP}/train/Covid/bomb.png", "skipped"),
    ]
    assert "40000 x 40000 = 1,600,000,000 pixels" in _detail(
        problems, f"{TOP}/train/Covid/bomb.png", "too-large"
    )
    assert f"over the limit of {MAX_PIXELS:,}" in _detail(
        problems, f"{TOP}/train/Covid/bomb.jpg", "too-large"
    )
    used = set(result.manifest["path_raw"])
    assert used == _train_files(top) - {
        f"{TOP}/train/Covid/bomb.png",
        f"{TOP}/train/Covid/bomb.jpg",
    }
    assert len(used) == 16
    assert pillow_limit == Image.MAX_IMAGE_PIXELS  # Pillow's global limit is untouched
    _nothing_left_behind(result)


def test_max_pixels_below_a_real_image(tmp_path: Path, shared_sources: Path) -> None:
    """``max_pixels`` is the limit: a real image over it is skipped, the rest kept; the limit
    is not part of the cache key, so a second build with the default keeps the image again."""
    top = _image_dataset(tmp_path / "mirror", shared_sources)
    big = f"{TOP}/train/Normal/066.jpeg"  # 2226 x 1731 = 3,853,206 pixels
    result = _build(tmp_path, [DATASET], max_pixels=3_500_000)
    assert _rows(_problems(result), "too-large") == [(DATASET, big, "skipped")]
    assert set(result.manifest["path_raw"]) == _train_files(top) - {big}
    lock = json.loads((result.path / "lock.json").read_text(encoding="utf-8"))
    assert lock["process"]["max_pixels"] == 3_500_000

    relocked = _build(tmp_path, [DATASET], name="-lock", lock=result.path / "lock.json")
    assert _rows(_problems(relocked), "too-large") == [(DATASET, big, "skipped")]
    assert relocked.manifest.equals(result.manifest)  # the lock's limit, not the default

    again = _build(tmp_path, [DATASET])  # same root: cached outputs, other limit
    assert not again.up_to_date
    assert _rows(_problems(again), "too-large") == []
    assert set(again.manifest["path_raw"]) == _train_files(top)


# 2. Symbolic links ---------------------------------------------------------------------------


def test_dangling_and_looping_links_are_broken_link_rows(
    tmp_path: Path, shared_sources: Path
) -> None:
    top = _image_dataset(tmp_path / "mirror", shared_sources)
    covid, normal = top / "train" / "Covid", top / "train" / "Normal"
    later = tmp_path / "later" / "not-there.jpeg"
    (covid / "gone.jpeg").symlink_to(later)
    (normal / "loop.jpeg").symlink_to("loop.jpeg")
    (normal / "ping.png").symlink_to("pong.png")
    (normal / "pong.png").symlink_to("ping.png")
    outside = tmp_path / "elsewhere" / "linked.jpeg"
    outside.parent.mkdir()
    outside.write_bytes(_real(shared_sources, "test/Covid/0100.jpeg"))
    (covid / "linked.jpeg").symlink_to(outside)  # a valid link to a file is followed

    result = _build(tmp_path, [DATASET])

    problems = _problems(result)
    assert _rows(problems, "broken-link") == [
        (DATASET, f"{TOP}/train/Covid/gone.jpeg", "skipped"),
        (DATASET, f"{TOP}/train/Normal/loop.jpeg", "skipped"),
        (DATASET, f"{TOP}/train/Normal/ping.png", "skipped"),
        (DATASET, f"{TOP}/train/Normal/pong.png", "skipped"),
    ]
    assert f"{str(later)!r} does not exist" in _detail(
        problems, f"{TOP}/train/Covid/gone.jpeg", "broken-link"
    )
    assert "loops" in _detail(problems, f"{TOP}/train/Normal/loop.jpeg", "broken-link")
    used = set(result.manifest["path_raw"])
    assert used == _train_files(top) | {f"{TOP}/train/Covid/linked.jpeg"}
    _nothing_left_behind(result)

    # The fingerprint walks the same links: an unchanged folder is up to date, a fixed link not.
    assert _build(tmp_path, [DATASET]).up_to_date
    later.parent.mkdir()
    later.write_bytes(_real(shared_sources, "test/Covid/096.png"))
    fixed = _build(tmp_path, [DATASET])
    assert not fixed.up_to_date
    assert f"{TOP}/train/Covid/gone.jpeg" in set(fixed.manifest["path_raw"])
    assert (DATASET, f"{TOP}/train/Covid/gone.jpeg", "skipped") not in _rows(
        _problems(fixed), "broken-link"
    )


# 3. An unreadable folder ---------------------------------------------------------------------

_CHILD = """
import sys
from pathlib import Path
from covid19_images.assemble.build import build
from covid19_images.process.executor import LocalExecutor

tmp = Path(sys.argv[1])
build(
    "xray-covid",
    sources=["covid19-image-dataset"],
    out=tmp / "out",
    mirror=tmp / "mirror",
    root=tmp / "root",
    executor=LocalExecutor(workers=1, progress=False),
    progress=False,
    dicom=False,
    fetch=False,
)
"""


def _without_permission_override() -> list[str]:
    """A command prefix that runs a process on which file permissions bite.

    As root, ``setpriv`` drops the capabilities that bypass them (CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH) instead of switching to ``nobody``: the interpreter may lie in a
    folder only root can enter (``/root/.pyenv``), and the child must still write its output.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is missing: permissions cannot bite")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]


def test_unreadable_folder_is_a_row_naming_it(tmp_path: Path, shared_sources: Path) -> None:
    prefix = _without_permission_override()
    top = _image_dataset(tmp_path / "mirror", shared_sources)
    locked = top / "test" / "Normal"
    for name in ("0108.jpeg", "0110.jpeg"):
        (locked / name).write_bytes(_real(shared_sources, f"test/Normal/{name}"))
    locked.chmod(0)
    try:
        probe = subprocess.run(
            [*prefix, sys.executable, "-c", f"import os; os.listdir({str(locked)!r})"],
            capture_output=True,
            text=True,
            check=False,
        )
        if "PermissionError" not in probe.stderr:
            pytest.skip(f"permissions do not bite here (setpriv: {probe.stderr.strip()!r})")
        done = subprocess.run(
            [*prefix, sys.executable, "-c", textwrap.dedent(_CHILD), str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        locked.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr

    dataset = tmp_path / "out" / "xray-covid"
    problems = pd.read_csv(dataset / "problems.csv", dtype=str, keep_default_na=False)
    assert _rows(problems, "unreadable-folder") == [(DATASET, f"{TOP}/test/Normal", "skipped")]
    assert "Permission denied" in _detail(problems, f"{TOP}/test/Normal", "unreadable-folder")
    manifest = pd.read_parquet(dataset / "manifest.parquet")
    assert set(manifest["path_raw"]) == _train_files(top) - {
        f"{TOP}/test/Normal/0108.jpeg",
        f"{TOP}/test/Normal/0110.jpeg",
    }
    assert len(manifest) == 16
    assert not [p.name for p in dataset.parent.iterdir() if p.name.startswith(".")]


# 4. Names that differ only in letter case ----------------------------------------------------

IEEE = "ieee8023-covid-chestxray"


def _ieee8023(mirror: Path, shared: Path, rows: int) -> tuple[Path, list[str]]:
    """The first ``rows`` X-ray PA/AP rows of ieee8023 whose images are in the mirror."""
    source = shared / IEEE
    table = pd.read_csv(source / "metadata.csv", dtype=str, keep_default_na=False)
    present = {p.name for p in (source / "images").iterdir()}
    table = table[
        table["filename"].isin(present)
        & (table["modality"] == "X-ray")
        & table["view"].isin(["PA", "AP"])
        & (table["finding"] == "COVID-19")
    ].head(rows)
    root = mirror / IEEE
    (root / "images").mkdir(parents=True)
    table.to_csv(root / "metadata.csv", index=False)
    names = list(table["filename"])
    for name in names:
        shutil.copyfile(source / "images" / name, root / "images" / name)
    return root, names


def test_case_clashes_one_used_the_other_a_row(tmp_path: Path, shared_sources: Path) -> None:
    top = _image_dataset(tmp_path / "mirror", shared_sources)
    covid = top / "train" / "Covid"
    (covid / "IMG.JPEG").write_bytes(_real(shared_sources, "test/Covid/0100.jpeg"))
    (covid / "IMG.jpeg").write_bytes(_real(shared_sources, "test/Covid/COVID-00022.jpg"))
    upper = top.parent / TOP.upper() / "TRAIN" / "NORMAL"  # folders A/ and a/
    upper.mkdir(parents=True)
    (upper / "055.JPEG").write_bytes(_real(shared_sources, "test/Normal/0118.jpeg"))
    # ieee8023 names its files in metadata.csv: the file a row names exactly is used, even when
    # another spelling sorts first.
    ieee, names = _ieee8023(tmp_path / "mirror", shared_sources, 6)
    named = names[0]
    other = next(
        p.name
        for p in sorted((shared_sources / IEEE / "images").iterdir())
        if p.suffix == Path(named).suffix and p.name not in names
    )
    shutil.copyfile(shared_sources / IEEE / "images" / other, ieee / "images" / named.upper())
    assert named.upper() < named  # the unnamed spelling sorts first

    result = _build(tmp_path, [DATASET, "ieee8023"])

    problems = _problems(result)
    assert _rows(problems, "name-clash") == [
        (DATASET, f"{TOP}/train/Covid/IMG.jpeg", "skipped"),
        (DATASET, f"{TOP}/train/Normal/055.jpeg", "skipped"),
        ("ieee8023", f"images/{named.upper()}", "skipped"),
    ]
    assert _detail(problems, f"{TOP}/train/Covid/IMG.jpeg", "name-clash") == (
        f"differs only in letter case from {TOP}/train/Covid/IMG.JPEG, which is used "
        "(first in sorted order); this file is not"
    )
    assert f"{TOP.upper()}/TRAIN/NORMAL/055.JPEG, which is used (first" in _detail(
        problems, f"{TOP}/train/Normal/055.jpeg", "name-clash"
    )
    assert f"images/{named}, which is used (metadata.csv row 1 names it exactly)" in _detail(
        problems, f"images/{named.upper()}", "name-clash"
    )
    used = set(result.manifest["path_raw"])
    assert {p for p in used if p.startswith("images/")} == {f"images/{n}" for n in names}
    # every other file is used: 16 train images, less 055.jpeg, plus the two kept spellings
    # every other file is used: the 16 train images (less 055.jpeg) and the kept spellings
    assert {p for p in used if not p.startswith("images/")} == _train_files(top) - {
        f"{TOP}/train/Covid/IMG.jpeg",
        f"{TOP}/train/Normal/055.jpeg",
    } | {f"{TOP.upper()}/TRAIN/NORMAL/055.JPEG"}


def test_file_index_prefers_the_exact_name(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for name in ("IMG.PNG", "img.png", "other.png"):
        (tmp_path / "images" / name).write_bytes(b"x")
    index = FileIndex.scan(tmp_path, "images")
    assert index.find("images/Img.png") == "images/IMG.PNG"  # no exact match: first sorted
    assert index.find("images/img.png") == "images/img.png"
    assert [c.file for c in index.clashes()] == ["images/img.png"]
    assert index.take("images/img.png", 3, "x", ProblemLog(), "meta.csv") == "images/img.png"
    clashes = list(index.clashes())
    assert [c.file for c in clashes] == ["images/IMG.PNG"]
    assert "meta.csv row 3 names it exactly" in clashes[0].detail
    assert list(index.orphans()) == ["images/other.png"]


# 5. Implausible sizes ------------------------------------------------------------------------


def test_implausible_sizes_are_rows(tmp_path: Path, shared_sources: Path) -> None:
    top = _image_dataset(tmp_path / "mirror", shared_sources)
    covid = top / "train" / "Covid"
    Image.new("L", (1, 1), 128).save(covid / "dot.png")
    Image.new("L", (20_000, 20), 128).save(covid / "strip.png")
    Image.new("L", (300, 1300), 128).save(covid / "tall.png")  # 4.3 : 1

    result = _build(tmp_path, [DATASET])

    problems = _problems(result)
    assert _rows(problems, "implausible-size") == [
        (DATASET, f"{TOP}/train/Covid/dot.png", "skipped"),
        (DATASET, f"{TOP}/train/Covid/strip.png", "skipped"),
        (DATASET, f"{TOP}/train/Covid/tall.png", "skipped"),
    ]
    assert _detail(problems, f"{TOP}/train/Covid/dot.png", "implausible-size").startswith(
        "1 x 1 px: a side under 48 px"
    )
    assert "aspect ratio of 4.3 : 1" in _detail(
        problems, f"{TOP}/train/Covid/tall.png", "implausible-size"
    )
    new = {f"{TOP}/train/Covid/{n}" for n in ("dot.png", "strip.png", "tall.png")}
    assert set(result.manifest["path_raw"]) == _train_files(top) - new
    _nothing_left_behind(result)


# 6. Deterministic unreadable-file details ----------------------------------------------------


def test_unreadable_file_detail_is_the_same_in_every_run(
    tmp_path: Path, shared_sources: Path
) -> None:
    top = _image_dataset(tmp_path / "mirror", shared_sources)
    covid = top / "train" / "Covid"
    (covid / "notes.jpeg").write_bytes(b"these are notes, not an image\n" * 10)
    whole = _real(shared_sources, "test/Covid/0100.jpeg")
    (covid / "cut.jpeg").write_bytes(whole[:1000])
    buffer = io.BytesIO()
    Image.new("L", (300, 300), 100).save(buffer, format="PNG")
    (covid / "broken.png").write_bytes(buffer.getvalue()[:60] + b"\x00" * 40)

    first = _build(tmp_path, [DATASET], name="1")
    second = _build(tmp_path, [DATASET], name="2")  # another cache: decoded afresh

    problems = _problems(first)
    files = {f for _, f, _ in _rows(problems, "unreadable-file")}
    assert files == {f"{TOP}/train/Covid/{n}" for n in ("notes.jpeg", "cut.jpeg", "broken.png")}
    assert _detail(problems, f"{TOP}/train/Covid/notes.jpeg", "unreadable-file") == (
        "cannot decode: not an image format Pillow can read"
    )
    assert not problems["detail"].str.contains("0x").any(), problems["detail"].tolist()
    assert (first.path / "problems.csv").read_bytes() == (second.path / "problems.csv").read_bytes()
    assert len(first.manifest) == 16


# The command line ----------------------------------------------------------------------------


def test_cli_build_max_pixels(tmp_path: Path, shared_sources: Path) -> None:
    top = _image_dataset(tmp_path / "mirror", shared_sources)
    (top / "train" / "Covid" / "bomb.png").write_bytes(bomb_png(40_000, 40_000))
    limit = 2_500_000
    over = set()
    for path in top.rglob("*.jpeg"):
        with Image.open(path) as img:
            if img.width * img.height > limit:
                over.add(path.relative_to(top.parent).as_posix())
    assert 0 < len(over) < 8  # some real Normal images are over it, some under

    result = CliRunner().invoke(
        app,
        [
            "build",
            "xray-covid",
            "--sources",
            DATASET,
            "--mirror",
            str(tmp_path / "mirror"),
            "--out",
            str(tmp_path / "out"),
            "--root",
            str(tmp_path / "root"),
            "--workers",
            "1",
            "--no-dicom",
            "--no-fetch",
            "--max-pixels",
            str(limit),
        ],
        env={"COLUMNS": "200"},
    )

    assert result.exit_code == 0, result.output
    dataset = tmp_path / "out" / "xray-covid"
    problems = pd.read_csv(dataset / "problems.csv", dtype=str, keep_default_na=False)
    too_large = {f for _, f, _ in _rows(problems, "too-large")}
    assert too_large == over | {f"{TOP}/train/Covid/bomb.png"}
    details = problems[problems["kind"] == "too-large"]["detail"]
    assert all(f"over the limit of {limit:,}" in d for d in details), details.tolist()
    manifest = pd.read_parquet(dataset / "manifest.parquet")
    assert set(manifest["path_raw"]) == _train_files(top) - too_large


def test_cli_max_pixels_must_be_positive(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["build", "xray-covid", "--out", str(tmp_path), "--no-fetch", "--max-pixels", "0"]
    )
    assert result.exit_code == 2
    assert "Invalid value for '--max-pixels'" in result.output


def test_only_links_that_can_hide_data_are_reported(tmp_path: Path) -> None:
    from covid19_images.problems import ProblemLog
    from covid19_images.sources.base import report_skipped

    root = tmp_path / "source"
    (root / "images").mkdir(parents=True)
    (root / ".git" / "objects").mkdir(parents=True)
    (root / "images" / "a.jpeg").symlink_to(tmp_path / "gone.jpeg")  # data: reported
    (root / "metadata.csv").symlink_to(tmp_path / "gone.csv")  # data: reported
    (root / "NOTES.md").symlink_to(tmp_path / "gone.md")  # not data
    (root / ".git" / "objects" / "b.jpeg").symlink_to(tmp_path / "gone2.jpeg")  # hidden folder
    log = ProblemLog()
    report_skipped("toy", root, [], log)
    assert [(p.file, p.kind) for p in log] == [
        ("images/a.jpeg", "broken-link"),
        ("metadata.csv", "broken-link"),
    ]
