"""Audit an assembled dataset: leakage between splits and confounding between label and source.

Leakage is checked from the images themselves, not trusted from the manifest: every image file
in the split folders is hashed again and compared across splits with the same two-step test as
the deduplication (perceptual-hash candidates, confirmed on pixels). Patients are checked from the
manifest. Any patient or near-duplicate pair on two sides of a split is leakage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from covid19_images.dedup.near import (
    DEFAULT_MAX_HAMMING,
    DEFAULT_MIN_CORRELATION,
    DEFAULT_MIN_DETAIL,
    find_duplicates,
)
from covid19_images.errors import Covid19ImagesError
from covid19_images.process.image import THUMB


class AuditError(Covid19ImagesError):
    """The folder is not an assembled dataset."""


@dataclass
class AuditReport:
    """Findings of an audit; ``leakage`` is True when anything crosses a split."""

    images: int
    shared_patients: list[dict[str, Any]] = field(default_factory=list)
    cross_split_duplicates: list[dict[str, Any]] = field(default_factory=list)
    class_by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    age_by_class: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def leakage(self) -> bool:
        return bool(self.shared_patients or self.cross_split_duplicates)

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "leakage": self.leakage,
            "shared_patients": self.shared_patients,
            "cross_split_duplicates": self.cross_split_duplicates,
            "class_by_source": self.class_by_source,
            "age_by_class": self.age_by_class,
            "warnings": self.warnings,
        }

    def text(self) -> str:
        """A human-readable summary."""
        lines = [
            f"images: {self.images}",
            f"patients in more than one split: {len(self.shared_patients)}",
            f"near-duplicate pairs across splits: {len(self.cross_split_duplicates)}",
        ]
        lines += [f"warning: {w}" for w in self.warnings]
        lines.append("LEAKAGE FOUND" if self.leakage else "no leakage found")
        return "\n".join(lines)


def audit_dataset(
    folder: Path | str,
    *,
    max_hamming: int = DEFAULT_MAX_HAMMING,
    min_correlation: float = DEFAULT_MIN_CORRELATION,
    min_detail: float = DEFAULT_MIN_DETAIL,
) -> AuditReport:
    """Audit the dataset in ``folder`` (with ``manifest.parquet`` and the split folders).

    Example:
        >>> report = audit_dataset("datasets/xray-covid")  # doctest: +SKIP
        >>> report.leakage  # doctest: +SKIP
        False
    """
    folder = Path(folder)
    try:
        manifest = pd.read_parquet(folder / "manifest.parquet")
    except (OSError, ValueError) as exc:
        raise AuditError(f"{folder} has no readable manifest.parquet: {exc}") from exc
    missing = {"uid", "split", "path", "patient_id", "class", "source"} - set(manifest.columns)
    if missing:
        raise AuditError(f"{folder}/manifest.parquet lacks columns {sorted(missing)}")
    report = AuditReport(images=len(manifest))
    report.shared_patients = _shared_patients(manifest)
    report.cross_split_duplicates = _cross_split_duplicates(
        folder, manifest, max_hamming, min_correlation, min_detail
    )
    report.class_by_source = {
        str(c): {str(s): int(n) for s, n in g.groupby("source").size().items()}
        for c, g in manifest.groupby("class")
    }
    report.age_by_class = _ages(manifest)
    report.warnings = _confounding(manifest)
    return report


def _shared_patients(manifest: pd.DataFrame) -> list[dict[str, Any]]:
    known = manifest[manifest["patient_id"].notna()]
    spread = known.groupby("patient_id")["split"].nunique()
    return [
        {
            "patient_id": str(p),
            "splits": sorted(known.loc[known["patient_id"] == p, "split"].unique().tolist()),
        }
        for p in spread[spread > 1].index
    ]


def _cross_split_duplicates(
    folder: Path,
    manifest: pd.DataFrame,
    max_hamming: int,
    min_correlation: float,
    min_detail: float,
) -> list[dict[str, Any]]:
    phashes: list[str | None] = []
    thumbs: list[np.ndarray] = []
    for rel in manifest["path"]:
        with Image.open(folder / rel) as img:
            grey = img.convert("L")
            phashes.append(str(imagehash.phash(grey)))
            thumbs.append(np.asarray(grey.resize((THUMB, THUMB), Image.Resampling.BOX)))
    found = find_duplicates(
        [None] * len(thumbs),  # exact copies are near copies at distance 0
        phashes,
        thumbs.__getitem__,
        max_hamming=max_hamming,
        min_correlation=min_correlation,
        min_detail=min_detail,
    )
    splits = manifest["split"].tolist()
    uids = manifest["uid"].tolist()
    return [
        {
            "uid_a": uids[p.a],
            "uid_b": uids[p.b],
            "splits": [splits[p.a], splits[p.b]],
            "hamming": p.hamming,
            "correlation": p.correlation,
            "detail": p.detail,
        }
        for p in found.pairs
        if splits[p.a] != splits[p.b]
    ]


def _ages(manifest: pd.DataFrame) -> dict[str, dict[str, float | int | None]]:
    out: dict[str, dict[str, float | int | None]] = {}
    for name, group in manifest.groupby("class"):
        ages = pd.to_numeric(group["age"], errors="coerce").dropna()
        out[str(name)] = {
            "with_age": len(ages),
            "median": float(ages.median()) if len(ages) else None,
            "q1": float(ages.quantile(0.25)) if len(ages) else None,
            "q3": float(ages.quantile(0.75)) if len(ages) else None,
            "under_18": int((ages < 18).sum()),
        }
    return out


def _confounding(manifest: pd.DataFrame) -> list[str]:
    warnings = []
    classes = sorted(manifest["class"].unique())
    table = manifest.groupby(["class", "source"]).size().unstack(fill_value=0)
    for name in classes:
        row = table.loc[name]
        top = str(row.idxmax())
        share = row.max() / row.sum()
        others = table.drop(index=name)[top].sum() if len(classes) > 1 else 0
        if share >= 0.9 and others == 0:
            warnings.append(
                f"{share:.0%} of class {name} comes from {top}, which gives no other class: "
                "a model can learn the source instead of the disease"
            )
    tags = manifest["tags"].map(lambda t: "paediatric" in list(t) if t is not None else False)
    children = manifest.assign(child=tags).groupby("class")["child"].mean()
    adult_classes = [c for c in classes if children.get(c, 0) < 0.1]
    for name in classes:
        if children.get(name, 0) >= 0.5 and adult_classes:
            warnings.append(
                f"{children[name]:.0%} of class {name} are children's images while "
                f"{', '.join(adult_classes)} are mostly adults: age confounds the label"
            )
    return warnings


def write_report(report: AuditReport, path: Path) -> None:
    """Write the report as JSON."""
    path.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
