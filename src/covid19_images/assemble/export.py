"""``export``: a built dataset in another tool's layout.

- ``imagefolder``: ``<split>/<class>/<file>.png`` (torchvision ``ImageFolder``, Keras
  ``image_dataset_from_directory``);
- ``covidx``: ``<split>/<file>.png`` and ``<split>.txt`` with lines ``patient_id filename
  label source``, COVID-Net's label files: the three-class task (COVIDx V9A labels
  ``COVID-19``, ``pneumonia``, ``normal``) or, with ``covidx_task="binary"``, COVID-Net's
  default binary task (COVIDx V9B labels ``positive`` for ``covid19``, ``negative`` for every
  other class). An image without an upstream patient id gets its uid as patient id, so each
  such image is its own patient;
- ``monai``: the images as ``imagefolder`` plus ``datalist.json`` (``training``,
  ``validation``, ``test``; paths relative to it);
- ``hf``: ``DatasetDict.save_to_disk`` (``datasets.load_from_disk`` reads it back);
- ``nnunet``: an nnU-Net v2 raw dataset of a segmentation dataset's image/label pairs;
- ``coco``: a detection dataset's ``annotations/instances_<split>.json`` and images
  (:mod:`covid19_images.assemble.coco`).

Images are hard links to the dataset's own files where the file system allows (copies
elsewhere); the target is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Final, Literal, get_args

import pandas as pd

from covid19_images.assemble.folder import link
from covid19_images.errors import Covid19ImagesError
from covid19_images.loaders.packed import INDEX, read_meta

FORMATS: Final = ("imagefolder", "covidx", "monai", "hf", "nnunet", "coco")
COVIDX_LABELS: Final = {"covid19": "COVID-19", "pneumonia": "pneumonia", "normal": "normal"}
"""COVIDx V9A (three-class task) label of each of our classes."""
CovidxTask = Literal["3class", "binary"]
COVIDX_TASKS: Final[tuple[str, ...]] = get_args(CovidxTask)
COVIDX_BINARY: Final = ("positive", "negative")
"""COVIDx V9B (binary task) labels: ``covid19``, and every other class."""


class ExportError(Covid19ImagesError):
    """A dataset cannot be exported in the format asked for."""

    exit_code = 2


def export(
    folder: Path | str,
    fmt: str,
    out: Path | str | None = None,
    *,
    covidx_task: CovidxTask | None = None,
) -> Path:
    """Write the dataset in ``folder`` in format ``fmt``; returns the folder written.

    ``out`` defaults to ``<folder>/exports/<fmt>`` (``<folder>/exports/covidx-binary`` for
    the binary COVIDx task). ``covidx_task`` (``covidx`` only): ``"3class"`` (the default,
    COVIDx V9A labels) or ``"binary"`` (COVIDx V9B: ``positive``/``negative``).

    Example:
        >>> export("datasets/xray-covid", "covidx").as_posix()  # doctest: +SKIP
        'datasets/xray-covid/exports/covidx'
        >>> export("datasets/xray-binary", "covidx", covidx_task="binary").as_posix()
        ... # doctest: +SKIP
        'datasets/xray-binary/exports/covidx-binary'
    """
    folder = Path(folder)
    if not (folder / "manifest.parquet").is_file():
        raise ExportError(f"{folder} is not a dataset of covid19-images (no manifest.parquet)")
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    if covidx_task is not None and fmt != "covidx":
        raise ExportError(
            f"the COVIDx task ({covidx_task!r}) applies to --format covidx only, not {fmt!r}"
        )
    task = covidx_task or "3class"
    if task not in COVIDX_TASKS:
        raise ExportError(f"unknown COVIDx task {task!r}; tasks: {', '.join(COVIDX_TASKS)}")
    default = "covidx-binary" if fmt == "covidx" and task == "binary" else fmt
    target = Path(out) if out is not None else folder / "exports" / default
    if target.exists() and any(target.iterdir()):
        raise ExportError(f"{target} exists and is not empty: remove it or pass another --out")
    writer: Callable[[Path, Path], None] = (
        partial(_covidx, task=task) if fmt == "covidx" else _WRITERS[fmt]
    )
    tmp = target.parent / f".{target.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    made = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        writer(folder, tmp)
        if target.exists():
            target.rmdir()
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for empty in made:  # the folders this call created, innermost first
            try:
                empty.rmdir()
            except OSError:
                break
        raise
    return target


def _missing(value: object) -> bool:
    """``None``, NaN/NA or a blank string: no value (NaN is truthy, so ``or`` does not do)."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or bool(pd.isna(value))  # type: ignore[call-overload]


def _token(value: object) -> str:
    """``value`` as one whitespace-free field (COVID-Net splits its lines on whitespace)."""
    return re.sub(r"\s+", "_", str(value).strip())


def _samples(folder: Path) -> pd.DataFrame:
    """Every 2-D sample (packed order) with its manifest row's patient and source."""
    read_meta(folder)
    samples = pd.read_parquet(folder / INDEX)
    manifest = pd.read_parquet(folder / "manifest.parquet", columns=["uid", "patient_id", "source"])
    return samples.merge(manifest, on="uid", how="left")


def _imagefolder(folder: Path, tmp: Path) -> None:
    samples = _samples(folder)
    for split, name, rel in zip(samples["split"], samples["class"], samples["path"], strict=True):
        link(folder / str(rel), tmp / str(split) / str(name) / Path(str(rel)).name)
    tmp.mkdir(parents=True, exist_ok=True)


def _covidx(folder: Path, tmp: Path, task: str = "3class") -> None:
    samples = _samples(folder)
    if task == "binary":
        classes = [str(c) for c in read_meta(folder)["classes"]]
        if "covid19" not in classes:
            raise ExportError(
                "binary COVIDx labels are positive (covid19) and negative (every other class); "
                f"this dataset has no covid19 class: {classes}"
            )
        labels = {c: COVIDX_BINARY[0] if c == "covid19" else COVIDX_BINARY[1] for c in classes}
    else:
        unknown = sorted(set(samples["class"]) - set(COVIDX_LABELS))
        if unknown:
            raise ExportError(
                f"COVIDx labels are COVID-19, pneumonia and normal; this dataset has {unknown} "
                "(--covidx-task binary writes positive/negative for any classes with covid19)"
            )
        labels = dict(COVIDX_LABELS)
    tmp.mkdir(parents=True, exist_ok=True)
    for split, rows in samples.groupby("split", sort=False):
        lines = []
        for row in rows.sort_values("index").to_dict("records"):
            name = Path(str(row["path"])).name
            link(folder / str(row["path"]), tmp / str(split) / name)
            patient = row["uid"] if _missing(row["patient_id"]) else row["patient_id"]
            if _missing(row["source"]):
                raise ExportError(f"{row['uid']} has no source in {folder / 'manifest.parquet'}")
            fields = (patient, name, labels[str(row["class"])], row["source"])
            lines.append(" ".join(_token(f) for f in fields))
        (tmp / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _monai(folder: Path, tmp: Path) -> None:
    _imagefolder(folder, tmp)
    samples = _samples(folder)
    keys = {"train": "training", "val": "validation", "test": "test"}
    meta = read_meta(folder)
    data: dict[str, object] = {"labels": {str(i): c for i, c in enumerate(meta["classes"])}}
    for split, key in keys.items():
        rows = samples[samples["split"] == split].sort_values("index")
        data[key] = [
            {
                "image": f"{split}/{name}/{Path(str(rel)).name}",
                "label": int(label),
                "uid": str(uid),
            }
            for name, rel, label, uid in zip(
                rows["class"], rows["path"], rows["label"], rows["uid"], strict=True
            )
        ]
    (tmp / "datalist.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _hf(folder: Path, tmp: Path) -> None:
    try:
        from covid19_images.loaders.hf import dataset_dict
    except ImportError as exc:
        raise ExportError(
            f"--format hf needs datasets: pip install 'covid19-images[hf]' ({exc})"
        ) from exc
    dataset_dict(folder).save_to_disk(str(tmp))


def _nnunet(folder: Path, tmp: Path) -> None:
    from covid19_images.assemble.ct import write_nnunet

    manifest = pd.read_parquet(folder / "manifest.parquet")
    if "mask_path" not in manifest or manifest["mask_path"].isna().all():
        raise ExportError(
            f"{folder} has no image/label pairs: nnU-Net needs a segmentation dataset "
            "(covid19-images build ct-lesion-seg)"
        )
    if not manifest["path"].astype(str).str.endswith(".nii.gz").all():
        raise ExportError(
            f"{folder} holds 2-D image/label PNG pairs (<split>/images, <split>/labels): the "
            "nnU-Net export writes CT NIfTI pairs (covid19-images build ct-lesion-seg)"
        )
    unlabelled = manifest.loc[manifest["mask_path"].map(_missing), "uid"]
    if len(unlabelled):
        raise ExportError(
            f"{len(unlabelled)} images of {folder} have no label map (e.g. {unlabelled.iloc[0]}): "
            "nnU-Net needs an image/label pair for every case"
        )
    lock = json.loads((folder / "lock.json").read_text(encoding="utf-8"))
    recipe = lock["recipe"]
    from covid19_images.process.ct.masks import LABELS

    labels = (
        {"background": 0, "lesion": 1} if recipe.get("mask_labels") == "lesion" else dict(LABELS)
    )
    name = str(recipe.get("nnunet_dataset") or "Dataset501_COVID19Lesion")
    write_nnunet(folder, manifest, tmp / name, labels, str(recipe.get("description") or ""))


def _coco(folder: Path, tmp: Path) -> None:
    from covid19_images.assemble.coco import write_coco

    write_coco(folder, tmp)


_WRITERS: dict[str, Callable[[Path, Path], None]] = {
    "imagefolder": _imagefolder,
    "covidx": _covidx,
    "monai": _monai,
    "hf": _hf,
    "nnunet": _nnunet,
    "coco": _coco,
}
