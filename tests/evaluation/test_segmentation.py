"""Segmentation metrics against MONAI's metric classes, torchmetrics and a brute-force HD95."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from covid19_images.errors import EvaluationError
from covid19_images.evaluation.metrics import bootstrap_cis
from covid19_images.evaluation.segmentation import (
    ct_lesion_scores,
    segmentation_scores,
    summarize_segmentation,
)

torch = pytest.importorskip("torch")
pytest.importorskip("monai")


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _maps(seed: int = 0, n: int = 4, side: int = 32) -> tuple[Any, Any]:
    """Label maps 0/1/2 (two "lungs") and a perturbed prediction; image 3 has no right lung."""
    rng = np.random.default_rng(seed)
    target = np.zeros((n, side, side), dtype=np.int64)
    for i in range(n):
        top, left = rng.integers(3, 8, 2)
        target[i, top : top + 18, left : left + 8] = 1
        if i != 3:
            target[i, top : top + 16, left + 12 : left + 20] = 2
    pred = target.copy()
    pred[:, ::2, :] = np.roll(target[:, ::2, :], shift=1, axis=2)  # ragged borders
    pred[1, 20:24, 24:28] = 2  # an island far from the right lung: HD95 grows
    pred[2][pred[2] == 2] = 0  # right lung missed
    return pred, target


def _one_hot(maps: Any, classes: int) -> Any:
    tensor = torch.as_tensor(maps)
    return torch.nn.functional.one_hot(tensor, classes).movedim(-1, 1).float()


def _hd95(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], spacing: Any = None) -> float:
    """Brute force: edge voxels by erosion, all pairwise distances, 95th percentile each way."""

    def edges(mask: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return np.argwhere(mask & ~ndimage.binary_erosion(mask))

    scale = np.ones(a.ndim) if spacing is None else np.asarray(spacing, dtype=float)
    ea, eb = edges(a) * scale, edges(b) * scale
    d = np.sqrt(((ea[:, None, :] - eb[None, :, :]) ** 2).sum(-1))
    return float(max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95)))


def test_scores_equal_monai_metric_classes_and_brute_force() -> None:
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU

    pred, target = _maps()
    scores = segmentation_scores(pred, target, ["background", "left", "right"])
    yp, yt = _one_hot(pred, 3), _one_hot(target, 3)
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=False)(yp, yt)
    iou = MeanIoU(include_background=False, reduction="none", ignore_empty=False)(yp, yt)
    assert np.allclose(scores[["dice_left", "dice_right"]].to_numpy(), dice.numpy(), atol=1e-6)
    assert np.allclose(scores[["iou_left", "iou_right"]].to_numpy(), iou.numpy(), atol=1e-6)
    hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    with pytest.warns(UserWarning):  # MONAI warns about the empty masks
        oracle = hd(yp, yt).numpy()
    ours = scores[["hd95_left", "hd95_right"]].to_numpy()
    assert np.isnan(ours[2, 1]) and np.isnan(ours[3, 1])  # missed; both empty
    defined = ~np.isnan(ours)
    assert np.allclose(ours[defined], oracle[defined], atol=1e-5)
    assert ours[1, 1] > 3 * ours[0, 1]  # the island
    for i in range(4):
        assert scores["hd95_left"][i] == pytest.approx(_hd95(pred[i] == 1, target[i] == 1))
    # The foreground is the union of the two lungs, scored like any class.
    union_p, union_t = pred > 0, target > 0
    oracle_fg = 2 * (union_p & union_t).sum((1, 2)) / (union_p.sum((1, 2)) + union_t.sum((1, 2)))
    assert np.allclose(scores["dice_foreground"], oracle_fg)
    assert scores["n_target_right"].tolist() == (target == 2).sum((1, 2)).tolist()
    assert scores["n_pred_foreground"].tolist() == union_p.sum((1, 2)).tolist()


def test_dice_equals_torchmetrics() -> None:
    from torchmetrics.functional.segmentation import dice_score

    pred, target = _maps(seed=1)
    pred, target = pred[:3], target[:3]  # images with both lungs present in the reference
    ours = segmentation_scores(pred, target, ["background", "left", "right"])
    oracle = dice_score(
        torch.as_tensor(pred),
        torch.as_tensor(target),
        num_classes=3,
        include_background=False,
        average="none",
        input_format="index",
    )
    assert np.allclose(ours[["dice_left", "dice_right"]].to_numpy(), oracle.numpy(), atol=1e-6)


def test_empty_mask_policy() -> None:
    empty = np.zeros((8, 8), dtype=np.uint8)
    square = empty.copy()
    square[2:5, 2:5] = 1
    pairs = [(empty, empty), (empty, square), (square, empty), (square, square)]
    scores = segmentation_scores(
        [p for p, _ in pairs], [t for _, t in pairs], ["background", "lesion"]
    )
    assert scores["dice_lesion"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert scores["iou_lesion"].tolist() == [1.0, 0.0, 0.0, 1.0]
    hd = scores["hd95_lesion"].tolist()
    assert all(math.isnan(v) for v in hd[:3]) and hd[3] == 0.0
    assert scores["n_target_lesion"].tolist() == [0, 9, 0, 9]
    assert scores["n_pred_lesion"].tolist() == [0, 0, 9, 9]
    assert "dice_foreground" not in scores  # one class: no separate foreground


def test_spacing_label_sets_and_ct_volumes() -> None:
    from monai.metrics import compute_hausdorff_distance

    rng = np.random.default_rng(3)
    # Harmonised CT maps: lungs 1 and 2, lesion 3, ground glass 4 (lesion = {3, 4, 5}).
    target = np.zeros((2, 6, 24, 24), dtype=np.int64)
    target[:, :, 2:22, 1:11], target[:, :, 2:22, 13:23] = 1, 2
    target[0, 1:4, 5:10, 3:8] = 3
    target[0, 2:5, 12:16, 15:20] = 4
    target[1, 2:4, 8:12, 4:9] = 4
    pred = target.copy()
    pred[pred == 4] = 3  # other lesion labels: the same lesion
    pred[0, 1, 5:10, 3:5] = 1  # part of a lesion missed
    pred[1, 0, 20:22, 20:22] = 5  # a false lesion
    relabelled = pred.copy()
    relabelled[relabelled == 1] = 2  # lungs swapped: no effect on the lesion scores
    spacings = [(2.5, 0.7, 0.7), (1.0, 0.8, 0.8)]
    ours = ct_lesion_scores(pred, target, lesion=[3, 4, 5], spacing=spacings)
    again = ct_lesion_scores(list(relabelled), list(target), lesion=[3, 4, 5], spacing=spacings)
    pd.testing.assert_frame_equal(ours, again)
    assert list(ours.columns) == [
        "dice_lesion",
        "iou_lesion",
        "hd95_lesion",
        "n_target_lesion",
        "n_pred_lesion",
    ]
    lesion_p, lesion_t = np.isin(pred, [3, 4, 5]), np.isin(target, [3, 4, 5])
    for i in range(2):
        inter = (lesion_p[i] & lesion_t[i]).sum()
        assert ours["dice_lesion"][i] == pytest.approx(
            2 * inter / (lesion_p[i].sum() + lesion_t[i].sum())
        )
        oracle = compute_hausdorff_distance(
            torch.as_tensor(lesion_p[i][None, None]).float(),
            torch.as_tensor(lesion_t[i][None, None]).float(),
            include_background=True,
            percentile=95,
            spacing=spacings[i],
        )
        assert ours["hd95_lesion"][i] == pytest.approx(float(oracle), abs=1e-5)
        assert ours["hd95_lesion"][i] == pytest.approx(
            _hd95(lesion_p[i], lesion_t[i], spacings[i]), abs=1e-5
        )
    # Volumes of different shapes go in as a list.
    shapes = [(4, 16, 16), (5, 12, 20)]
    volumes = [rng.integers(0, 2, s) for s in shapes]
    mixed = ct_lesion_scores(volumes, volumes)
    assert mixed["dice_lesion"].tolist() == [1.0, 1.0]
    assert mixed["hd95_lesion"].tolist() == [0.0, 0.0]


def test_bad_inputs_are_clear() -> None:
    maps = np.zeros((2, 8, 8), dtype=np.int64)
    with pytest.raises(ValueError, match="integer labels"):
        segmentation_scores(maps.astype(float), maps, ["background", "lung"])
    with pytest.raises(ValueError, match="same 2-D or 3-D shape"):
        segmentation_scores([maps[0]], [maps[0, :4]], ["background", "lung"])
    with pytest.raises(ValueError, match="no class to score"):
        segmentation_scores(maps, maps, ["background"])
    with pytest.raises(ValueError, match="reserved"):
        segmentation_scores(maps, maps, {"foreground": 1})
    with pytest.raises(ValueError, match="meta has 3 rows"):
        segmentation_scores(maps, maps, ["background", "lung"], meta=pd.DataFrame({"a": [1, 2, 3]}))


def test_missing_monai_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "monai.metrics", None)
    maps = np.zeros((1, 8, 8), dtype=np.int64)
    with pytest.raises(EvaluationError, match=r"pip install 'covid19-images\[monai\]'"):
        segmentation_scores(maps, maps, ["background", "lung"])


def _meta() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "uid": [f"img{i}" for i in range(8)],
            "patient_id": ["p1", "p1", "p2", "p3", "p3", "p3", None, "p4"],
            "source": ["a", "a", "a", "b", "b", "b", "b", "a"],
        }
    )


def test_summaries_per_image_and_patient_with_patient_bootstrap() -> None:
    pred, target = _maps(seed=2, n=8)
    meta = _meta()
    scores = segmentation_scores(pred, target, ["background", "left", "right"], meta=meta)
    assert scores["uid"].tolist() == meta["uid"].tolist()
    table = summarize_segmentation(scores, n_boot=200, seed=1)
    row = table[(table["source"] == "all") & (table["metric"] == "dice_right")].iloc[0]
    assert row["value"] == pytest.approx(scores["dice_right"].mean())
    assert row["n"] == 8 and row["groups"] == 5  # four patients and one image without one
    assert row["low"] <= row["value"] <= row["high"]
    hd = table[(table["source"] == "all") & (table["metric"] == "hd95_right")].iloc[0]
    assert hd["defined"] == int(scores["hd95_right"].notna().sum()) == 6  # 2: missed, 3: both empty
    assert hd["value"] == pytest.approx(scores["hd95_right"].dropna().mean())
    # The interval is bootstrap_cis' own over patients, the same resamples for every metric.
    oracle = bootstrap_cis(scores, lambda f: {"dice_right": f["dice_right"].mean()}, n=200, seed=1)[
        "dice_right"
    ]
    assert (row["low"], row["high"]) == (oracle.low, oracle.high)
    b = table[(table["source"] == "b") & (table["metric"] == "dice_left")].iloc[0]
    assert b["value"] == pytest.approx(scores.loc[scores["source"] == "b", "dice_left"].mean())
    assert b["n"] == 4 and b["groups"] == 2

    patients = summarize_segmentation(scores, unit="patient", n_boot=200, seed=1)
    prow = patients[(patients["source"] == "all") & (patients["metric"] == "dice_left")].iloc[0]
    per_patient = scores.groupby(scores["patient_id"].fillna(scores["uid"]))["dice_left"].mean()
    assert prow["value"] == pytest.approx(per_patient.mean())
    assert prow["n"] == prow["groups"] == 5
    assert list(patients["source"].unique()) == ["all", "a", "b"]
