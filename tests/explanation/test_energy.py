"""CAM energy inside masks: the share by hand, lung masks at the packed size, the summary table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from covid19_images.explanation import (
    ExplainError,
    energy_inside,
    energy_table,
    load_masks,
    mask_area,
)
from covid19_images.process.image import decode_image


def test_energy_inside_is_the_share_of_the_map_in_the_mask() -> None:
    cams = np.array(
        [
            [[1.0, 2.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 4.0]],
            [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]],
            [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        ]
    )
    diagonal = np.eye(3, dtype=bool)
    top_row = np.zeros((3, 3), dtype=np.uint8)
    top_row[0] = 255
    shares = energy_inside(cams, [diagonal, top_row, diagonal])
    assert shares[0] == pytest.approx((1 + 3 + 4) / 10)
    assert shares[1] == pytest.approx(3 / 9)
    assert math.isnan(shares[2])  # no energy to share out
    assert math.isnan(energy_inside(cams[:1], [None])[0])
    assert list(mask_area([diagonal, top_row, None])[:2]) == pytest.approx([1 / 3, 1 / 3])
    with pytest.raises(ExplainError, match="resize masks"):
        energy_inside(cams[:1], [np.ones((2, 2))])
    with pytest.raises(ExplainError, match="2 masks for 1 maps"):
        energy_inside(cams[:1], [None, None])


def test_energy_table_per_class_and_overall() -> None:
    table = energy_table(
        [0.8, 0.6, float("nan"), 0.2],
        ["covid19", "covid19", "normal", "pneumonia"],
        area=[0.3, 0.5, 0.4, 0.2],
    )
    assert table.splitlines() == [
        "| class | images | with mask | energy in mask (mean) | (median) | mask area (mean) |",
        "|---|---:|---:|---:|---:|---:|",
        "| covid19 | 2 | 2 | 0.70 | 0.70 | 0.40 |",
        "| normal | 1 | 0 | n/a | n/a | n/a |",
        "| pneumonia | 1 | 1 | 0.20 | 0.20 | 0.20 |",
        "| all | 4 | 3 | 0.53 | 0.60 | 0.33 |",
    ]
    with pytest.raises(ExplainError, match="1 classes for 2 shares"):
        energy_table([0.1, 0.2], ["a"])


def _row(
    uid: str, masks: list[str], width: int, height: int, source: str = "s"
) -> dict[str, object]:
    return {"uid": uid, "source": source, "mask_paths": masks, "width": width, "height": height}


def test_masks_follow_the_centre_square_and_are_resized_nearest(tmp_path: Path) -> None:
    # A 100 x 60 radiograph: its square copy is columns 20..79. The mask marks the left half of
    # that square, so at 4 x 4 the two left columns are inside.
    full = np.zeros((60, 100), np.uint8)
    full[:, 20:50] = 255
    Image.fromarray(full).save(tmp_path / "full.png")
    # The same mask stored at half size (as the Radiography Database stores 256 px masks).
    Image.fromarray(full[::2, ::2]).save(tmp_path / "half.png")
    rows = pd.DataFrame(
        [
            _row("a", ["full.png"], 100, 60),
            _row("b", ["half.png"], 100, 60),
            _row("c", [], 100, 60),
            {"uid": "d", "source": "s", "mask_paths": np.array(["vol_mask.nii.gz"])},
        ]
    )
    masks = load_masks(rows, 4, folders={"s": tmp_path})
    expected = np.zeros((4, 4), dtype=bool)
    expected[:, :2] = True
    assert masks[0] is not None and masks[0].dtype == bool
    assert np.array_equal(masks[0], expected)
    assert masks[1] is not None and np.array_equal(masks[1], expected)
    assert masks[2] is None and masks[3] is None
    wide = load_masks(rows.iloc[:1], (2, 6), folders={"s": tmp_path})[0]
    assert wide is not None and wide.shape == (2, 6)


def test_several_mask_files_are_united(tmp_path: Path) -> None:
    for name, column in (("left.png", 0), ("right.png", 3)):
        stripe = np.zeros((4, 4), np.uint8)
        stripe[:, column] = 1
        Image.fromarray(stripe).save(tmp_path / name)
    (mask,) = load_masks(
        pd.DataFrame([_row("a", ["left.png", "right.png"], 4, 4)]), 4, folders={"s": tmp_path}
    )
    assert mask is not None
    assert mask[:, [0, 3]].all() and not mask[:, [1, 2]].any()


def test_an_unreadable_mask_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows = pd.DataFrame([_row("img-7", ["broken.png"], 10, 10)])
    with pytest.raises(
        ExplainError, match=r"image img-7 \(s\): cannot read its mask .*broken\.png"
    ):
        load_masks(rows, 8, folders={"s": tmp_path})
    with pytest.warns(UserWarning, match="cannot read its mask"):
        assert load_masks(rows, 8, folders={"s": tmp_path}, on_error="warn") == [None]
    missing = pd.DataFrame([_row("img-8", ["gone.png"], 10, 10)])
    with pytest.raises(ExplainError, match=r"gone\.png"):
        load_masks(missing, 8, folders={"s": tmp_path})


def test_a_source_that_is_not_found_says_what_to_do(tmp_path: Path) -> None:
    rows = pd.DataFrame([_row("x", ["a.png"], 10, 10, source="ieee8023")])
    with pytest.raises(ExplainError, match="covid19-images fetch ieee8023"):
        load_masks(rows, 8, root=tmp_path, mirror=tmp_path / "nothing")


@pytest.mark.parametrize(
    ("image", "width", "height"),
    [("wong-0000.jpg", 500, 524), ("ryct.2020003.fig2-a.png", 157, 156)],
)
def test_ieee8023_lung_masks_lie_on_the_lungs_of_the_packed_copy(
    shared_sources: Path, image: str, width: int, height: int
) -> None:
    folder = shared_sources / "ieee8023-covid-chestxray"
    stem = Path(image).stem
    rows = pd.DataFrame(
        [_row(stem, [f"annotations/lungVAE-masks/{stem}_mask.png"], width, height, "ieee8023")]
    )
    (mask,) = load_masks(rows, 64, mirror=shared_sources)
    assert mask is not None and mask.shape == (64, 64)
    assert 0.15 < mask.mean() < 0.6
    copy = decode_image(folder / "images" / image, sizes=(64,)).copies[64].astype(float)
    # Lungs are dark (air): darker inside the mask than outside it, and than inside the same
    # mask turned upside down.
    assert copy[mask].mean() < copy[~mask].mean() - 20
    assert copy[mask].mean() < copy[mask[::-1]].mean() - 10
