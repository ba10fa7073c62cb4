"""Small CT DICOM files generated for tests (uncompressed CT Image Storage, one per slice)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def make_ct(
    path: Path,
    *,
    series_uid: str,
    z: float,
    size: tuple[int, int] = (16, 16),
    iop: Sequence[float] = AXIAL,
    origin_xy: tuple[float, float] = (-10.0, -20.0),
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    pixels: np.ndarray[Any, Any] | None = None,
    slope: float | None = 1.0,
    intercept: float | None = -1024.0,
    bits_stored: int = 12,
    signed: bool = False,
    series_number: int = 3,
    modality: str = "CT",
    position: Sequence[float] | None = None,
    syntax: UID = ExplicitVRLittleEndian,
    **header: Any,
) -> Path:
    """Write one small uncompressed CT Image Storage file; ``header`` adds or overrides
    elements by keyword (``PatientAge="045Y"``)."""
    rows, columns = size
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = "Test^Person"
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesNumber = series_number
    ds.ImageType = list(image_type)
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelSpacing = [0.5, 0.75]  # rows 0.5 mm apart, columns 0.75 mm apart
    ds.SliceThickness = 2.0
    ds.ImageOrientationPatient = [float(v) for v in iop]
    if position is None:
        position = (*origin_xy, z)
    ds.ImagePositionPatient = [float(v) for v in position]
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if pixels is None:
        pixels = np.full((rows, columns), int(abs(z) * 10) % 1000, dtype=np.uint16)
        pixels[0, 0] = 0
        pixels[-1, -1] = 1000 + rows
    raw = np.ascontiguousarray(pixels)
    ds.PixelData = raw.astype("<i2" if raw.dtype.kind == "i" else "<u2").tobytes()
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def series(
    folder: Path, count: int, *, step: float = 2.0, skip: Sequence[int] = (), **kw: Any
) -> str:
    """``count`` slices of one new series in ``folder`` (files named in reverse order)."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = kw.pop("series_uid", None) or generate_uid()
    prefix = kw.pop("prefix", "s")
    for index in range(count):
        if index in skip:
            continue
        make_ct(folder / f"{prefix}{count - index:03d}.dcm", series_uid=uid, z=index * step, **kw)
    return uid
