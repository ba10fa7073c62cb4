"""Bad input never stops a build and is never silent."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from covid19_images.assemble.build import build
from covid19_images.process.executor import LocalExecutor


def _film(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:400, 0:360]
    body = 110 + 50 * np.sin(x / (20 + seed)) * np.cos(y / (25 + seed))
    return Image.fromarray(np.clip(body + rng.normal(0, 6, body.shape), 0, 255).astype(np.uint8))


def test_corrupt_truncated_mislabelled_and_missing_files(tmp_path: Path) -> None:
    root = tmp_path / "mirror" / "figure1-covid-chestxray"
    images = root / "images"
    images.mkdir(parents=True)
    for i in range(1, 9):
        _film(i).save(images / f"COVID-0000{i}.jpg", quality=90)
    whole = io.BytesIO()
    _film(20).save(whole, format="JPEG")
    (images / "COVID-00010.jpg").write_bytes(whole.getvalue()[:800])  # truncated
    (images / "COVID-00011.png").write_bytes(b"")  # zero bytes
    _film(21).save(images / "COVID-00012.jpg", format="PNG")  # a PNG named .jpg
    _film(22).save(images / "COVID-00099.jpg")  # no metadata row names it
    rows = [f"COVID-0000{i},,M,50,COVID-19,,,,PA,X-ray,,notes" for i in range(1, 9)]
    rows += [
        "COVID-00010,,F,60,COVID-19,,,,PA,X-ray,,",
        "COVID-00011,,F,61,COVID-19,,,,AP,X-ray,,",
        "COVID-00012,,F,62,COVID-19,,,,AP,X-ray,,",
        "COVID-00013,,F,63,COVID-19,,,,AP,X-ray,,",  # its image is missing
        "COVID-00014,,F,64,Something odd,,,,sideways,X-ray,,",  # unmapped finding, unknown view
        "COVID-00001,,M,50,COVID-19,,,,PA,X-ray,,notes",  # a repeated row
    ]
    header = (
        "patientid,offset,sex,age,finding,survival,temperature,pO2 saturation,view,"
        "modality,artifacts/distortion,notes\n"
    )
    text = header + "\n".join(rows) + "\n"
    (root / "metadata.csv").write_bytes(text.replace("notes", "37\xb0C").encode("cp1252"))
    _film(30).save(images / "COVID-00014.jpg")

    result = build(
        "xray-covid",
        sources=["figure1"],
        out=tmp_path / "out",
        mirror=tmp_path / "mirror",
        root=tmp_path / "root",
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
    )

    problems = pd.read_csv(result.path / "problems.csv")
    found = set(zip(problems["file"], problems["kind"], strict=True))
    assert ("images/COVID-00010.jpg", "unreadable-file") in found
    assert ("images/COVID-00011.png", "empty-file") in found
    assert ("images/COVID-00012.jpg", "wrong-extension") in found
    assert ("images/COVID-00099.jpg", "orphan-file") in found
    assert ("metadata.csv", "bad-encoding") in found
    assert ("images/COVID-00014.jpg", "unmapped-finding") in found
    assert ("images/COVID-00014.jpg", "unknown-view") in found
    assert any(k == "missing-file" for _, k in found)
    assert any(k == "duplicate-row" for _, k in found)
    manifest = result.manifest
    assert "images/COVID-00012.jpg" in set(manifest["path_raw"])  # kept, flagged
    assert not {"images/COVID-00010.jpg", "images/COVID-00011.png"} & set(manifest["path_raw"])
    expected = {f"images/COVID-0000{i}.jpg" for i in range(1, 9)} | {"images/COVID-00012.jpg"}
    assert set(manifest["path_raw"]) == expected  # COVID-00014 is unknown: filtered, reported
    assert ("images/COVID-00014.jpg", "filtered") in found
