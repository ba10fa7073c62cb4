"""Audit an assembled dataset: leakage between splits and confounding between label and source.

Leakage is checked from the images themselves, not trusted from the manifest: every image file
in the split folders is hashed again and compared across splits with the same two-step test as
the deduplication (perceptual-hash candidates, confirmed on pixels). Patients are checked from the
manifest. Any patient or near-duplicate pair on two sides of a split is leakage.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from covid19_images.dedup.near import (
    DEFAULT_MAX_HAMMING,
    DEFAULT_MIN_ALIGNED,
    DEFAULT_MIN_CORRELATION,
    DEFAULT_MIN_DETAIL,
    find_duplicates,
)
from covid19_images.errors import Covid19ImagesError
from covid19_images.process.executor import Executor, fails_as
from covid19_images.process.image import THUMB
from covid19_images.process.signature import (
    Signature,
    compute_signature,
    content_image,
)
from covid19_images.progress import track


class AuditError(Covid19ImagesError):
    """The folder is not an assembled dataset (exit code 2: an error, not a finding)."""

    exit_code = 2


@dataclass
class AuditReport:
    """Findings of an audit; ``leakage`` is True when anything crosses a split."""

    images: int
    shared_patients: list[dict[str, Any]] = field(default_factory=list)
    cross_split_duplicates: list[dict[str, Any]] = field(default_factory=list)
    class_by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    age_by_class: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    """Images the manifest lists that are not in the folder (or cannot be read)."""
    unlisted_files: list[str] = field(default_factory=list)
    """Images in the split folders that the manifest does not list."""

    @property
    def leakage(self) -> bool:
        return bool(self.shared_patients or self.cross_split_duplicates)

    @property
    def broken(self) -> bool:
        """The folder and its manifest disagree: the audit cannot vouch for it."""
        return bool(self.missing_files or self.unlisted_files)

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "leakage": self.leakage,
            "missing_files": self.missing_files,
            "unlisted_files": self.unlisted_files,
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
        if self.missing_files:
            lines.append(f"listed but missing or unreadable: {len(self.missing_files)} images")
        if self.unlisted_files:
            lines.append(f"in the folders but not in the manifest: {len(self.unlisted_files)}")
        lines += [f"warning: {w}" for w in self.warnings]
        lines.append("LEAKAGE FOUND" if self.leakage else "no leakage found")
        return "\n".join(lines)


def audit_dataset(
    folder: Path | str,
    *,
    max_hamming: int | None = None,
    min_correlation: float | None = None,
    min_detail: float | None = None,
    min_aligned: float | None = None,
    memo: FileSignatures | None = None,
    progress: bool = False,
) -> AuditReport:
    """Audit the dataset in ``folder`` (with ``manifest.parquet`` and the split folders).

    The near-duplicate thresholds default to the ones of the recipe in the folder's
    ``lock.json`` (else the package defaults), so the audit judges a dataset as its build did.

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
    dedup = _recipe_thresholds(folder)
    report = AuditReport(images=len(manifest))
    report.shared_patients = _shared_patients(manifest, _slice_splits(folder))
    listed = _listed(folder, manifest)
    on_disk = {
        p.relative_to(folder).as_posix()
        for top in ("train", "val", "test", "volumes")
        for p in (folder / top).rglob("*")
        if p.is_file()
    }
    report.unlisted_files = sorted(on_disk - listed)
    images = manifest[manifest["path"].astype(str).str.endswith(".png")]
    report.missing_files = sorted(listed - on_disk)
    report.cross_split_duplicates = _same_volume_across_splits(manifest)
    pairs, missing_images = _cross_split_duplicates(
        folder,
        images,
        max_hamming if max_hamming is not None else dedup.get("max_hamming", DEFAULT_MAX_HAMMING),
        min_correlation
        if min_correlation is not None
        else dedup.get("min_correlation", DEFAULT_MIN_CORRELATION),
        min_detail if min_detail is not None else dedup.get("min_detail", DEFAULT_MIN_DETAIL),
        min_aligned if min_aligned is not None else dedup.get("min_aligned", DEFAULT_MIN_ALIGNED),
        memo,
        progress,
    )
    report.cross_split_duplicates += pairs
    report.missing_files = sorted({*report.missing_files, *missing_images})
    report.class_by_source = {
        str(c): {str(s): int(n) for s, n in g.groupby("source").size().items()}
        for c, g in manifest.groupby("class")
    }
    report.age_by_class = _ages(manifest)
    report.warnings = _confounding(manifest, classified=_recipe_task(folder) == "classification")
    return report


def _listed(folder: Path, manifest: pd.DataFrame) -> set[str]:
    """Every file the dataset's tables name: images or volumes, masks, slices."""
    listed = set(manifest["path"])
    if "mask_path" in manifest:
        listed |= {str(p) for p in manifest["mask_path"].dropna()}
    slices = folder / "slices.parquet"
    if slices.is_file():
        try:
            listed |= set(pd.read_parquet(slices, columns=["path"])["path"])
        except (OSError, ValueError, KeyError) as exc:
            raise AuditError(f"{slices} cannot be read: {exc}") from exc
    return listed


def _same_volume_across_splits(manifest: pd.DataFrame) -> list[dict[str, Any]]:
    """CT volumes with identical voxels in two splits (near copies of 2-D images come below)."""
    if "level" not in manifest or "sha256_pixels" not in manifest:
        return []
    volumes = manifest[(manifest["level"] == "volume") & manifest["sha256_pixels"].notna()]
    found = []
    for _, group in volumes.groupby("sha256_pixels"):
        if group["split"].nunique() > 1:
            rows = group.sort_values("uid")
            first = rows.iloc[0]
            for _, other in rows.iloc[1:].iterrows():
                if other["split"] != first["split"]:
                    found.append(
                        {
                            "uid_a": first["uid"],
                            "uid_b": other["uid"],
                            "splits": [first["split"], other["split"]],
                            "hamming": 0,
                            "correlation": 1.0,
                            "detail": 1.0,
                        }
                    )
    return found


def _recipe_thresholds(folder: Path) -> dict[str, Any]:
    try:
        lock = json.loads((folder / "lock.json").read_text(encoding="utf-8"))
        dedup = lock["recipe"]["dedup"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return dict(dedup) if isinstance(dedup, dict) else {}


def _recipe_task(folder: Path) -> str:
    """The task of the recipe in the folder's ``lock.json`` (``classification`` if unknown)."""
    try:
        lock = json.loads((folder / "lock.json").read_text(encoding="utf-8"))
        task = lock["recipe"].get("task", "classification")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "classification"
    return str(task)


def _slice_splits(folder: Path) -> pd.DataFrame | None:
    """A CT dataset's slices (uid, patient, split): a volume's slices can sit in other splits
    than its manifest row (a hand-edited table, a naive build), and count as its patient's."""
    path = folder / "slices.parquet"
    if not path.is_file():
        return None
    try:
        return pd.read_parquet(path, columns=["uid", "patient_id", "split"])
    except (OSError, ValueError, KeyError):
        return None  # _listed reports an unreadable table


def _shared_patients(
    manifest: pd.DataFrame, slices: pd.DataFrame | None = None
) -> list[dict[str, Any]]:
    """Patients (from the manifest and a CT dataset's slices) in more than one split; a CT
    sample without a patient id whose slices are in several splits counts as one too.

    Example:
        >>> rows = pd.DataFrame({"uid": ["a", "b"], "patient_id": ["p", "p"],
        ...                      "split": ["train", "test"]})
        >>> _shared_patients(rows)
        [{'patient_id': 'p', 'splits': ['test', 'train']}]
    """
    rows = manifest[["uid", "patient_id", "split"]]
    if slices is not None:
        rows = pd.concat([rows, slices], ignore_index=True)
    found: list[dict[str, Any]] = []
    splits = rows.dropna(subset=["patient_id"]).groupby("patient_id")["split"].unique()
    for p, s in splits.items():
        if len(s) > 1:
            found.append({"patient_id": str(p), "splits": sorted(str(x) for x in s)})
    no_id = rows[rows["patient_id"].isna()].groupby("uid")["split"].unique()
    for uid, s in no_id.items():
        if len(s) > 1:
            found.append({"patient_id": None, "uid": str(uid), "splits": sorted(str(x) for x in s)})
    return found


def _cross_split_duplicates(
    folder: Path,
    manifest: pd.DataFrame,
    max_hamming: int,
    min_correlation: float,
    min_detail: float,
    min_aligned: float,
    memo: FileSignatures | None = None,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Copies across splits, found from the image files; and the files that could not be read."""
    pairs, unreadable = cross_split_copies(
        [folder / str(rel) for rel in manifest["path"]],
        manifest["split"].astype(str).tolist(),
        manifest["uid"].astype(str).tolist(),
        max_hamming=max_hamming,
        min_correlation=min_correlation,
        min_detail=min_detail,
        min_aligned=min_aligned,
        memo=memo,
        progress=progress,
    )
    return pairs, [Path(p).relative_to(folder).as_posix() for p in unreadable]


class FileSignatures:
    """Signatures of image files, computed once per file content (its bytes' sha256).

    The build's own cross-split check and the audit that follows read the same files (the
    dataset's images are hard links to the processed copies); one memo spares the second pass.
    Each call still reads and hashes the file it is given, so nothing is trusted by name. The
    content images are not kept: they are made again from the file for the few candidates.

    Example:
        >>> memo = FileSignatures()
        >>> memo.get(Path("no-such-file.png")) is None
        True
    """

    def __init__(self) -> None:
        self._by_digest: dict[str, tuple[str, np.ndarray, Signature]] = {}
        self._found: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        self._searches: dict[tuple[Any, ...], dict[str, Any]] = {}
        """Per set of files (uids and contents) and thresholds, whatever the splits: the
        candidate pairs and every tested pair's verdict (``find_duplicates``' ``cache``)."""
        """Cross-split pairs already found, by everything the search depends on."""

    def get(self, path: Path) -> tuple[str, np.ndarray, Signature] | None:
        """(perceptual hash, frame thumbnail, signature) of the image file; None if unreadable."""
        found = self.lookup(path)
        return None if found is None else found[1]

    def lookup(self, path: Path) -> tuple[str, tuple[str, np.ndarray, Signature]] | None:
        """The file's sha256 and what :meth:`get` returns; None if unreadable."""
        try:
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest not in self._by_digest:
                self._by_digest[digest] = _entry(data)
            return digest, self._by_digest[digest]
        except (OSError, SyntaxError, ValueError):
            return None

    def prime(self, paths: Sequence[Path], executor: Executor) -> None:
        """Compute the signatures of many files at once, in the executor's workers.

        Only a head start: :meth:`lookup` still reads and hashes each file it is asked about,
        and an unreadable file is left for it to report.
        """
        for found in executor.map(_file_entry, list(paths), "hashing the split's images"):
            if found is not None:
                self._by_digest.setdefault(found[0], found[1])


def _entry(data: bytes) -> tuple[str, np.ndarray, Signature]:
    """(perceptual hash, frame thumbnail, signature) of an image file's bytes."""
    with Image.open(io.BytesIO(data)) as img:
        signature, _, small = compute_signature(img.convert("L"))
    return (
        f"{signature.views[0]:016x}",
        np.asarray(small.resize((THUMB, THUMB), Image.Resampling.BOX)),
        signature,
    )


def _no_entry(path: Path, reason: str) -> tuple[str, tuple[str, np.ndarray, Signature]] | None:
    """A file an engine gave up on hashing: left for :meth:`lookup`, as an unreadable one."""
    return None


@fails_as(_no_entry)
def _file_entry(path: Path) -> tuple[str, tuple[str, np.ndarray, Signature]] | None:
    """A file's sha256 and :func:`_entry` (for an executor); None if it cannot be read."""
    try:
        data = path.read_bytes()
        return hashlib.sha256(data).hexdigest(), _entry(data)
    except (OSError, SyntaxError, ValueError):
        return None


def _file_content(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(content_image(img.convert("L"))[1])


def cross_split_copies(
    paths: list[Path],
    splits: list[str],
    uids: list[str],
    *,
    max_hamming: int = DEFAULT_MAX_HAMMING,
    min_correlation: float = DEFAULT_MIN_CORRELATION,
    min_detail: float = DEFAULT_MIN_DETAIL,
    min_aligned: float = DEFAULT_MIN_ALIGNED,
    memo: FileSignatures | None = None,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Pairs of image files in different splits that are copies of one film; unreadable files.

    The files are hashed and compared afresh (whole frames, views, keypoints, aligned pixels:
    :func:`~covid19_images.dedup.near.find_duplicates`), so the check trusts nothing a build
    recorded. ``build`` runs it before writing, ``audit`` on what was written. Only pairs that
    cross a split are tested on pixels. The answer depends only on the files' contents (their
    sha256), uids, splits and the thresholds; a ``memo`` that has seen the same ones already
    (the build's check, then its audit of the files it wrote: the same bytes) gives it again
    without a second search.

    Example:
        >>> pairs, unreadable = cross_split_copies([], [], [])
        >>> pairs, unreadable
        ([], [])
    """
    memo = memo if memo is not None else FileSignatures()
    # One order whatever the caller's (by uid), so that the search is a function of the
    # files' contents, uids and splits alone, and a second call on the same ones (the audit
    # after the build's own check) is answered from the memo.
    order = sorted(range(len(paths)), key=lambda k: (uids[k], splits[k], str(paths[k])))
    phashes: list[str | None] = []
    thumbs: list[np.ndarray] = []
    signatures: list[Signature | None] = []
    digests: list[str | None] = []
    missing: list[str] = []
    blank = np.zeros((THUMB, THUMB), dtype=np.uint8)
    unreadable = set()
    for k in track(order, len(order), "hashing the dataset's images", progress):
        found = memo.lookup(paths[k])
        if found is None:
            unreadable.add(k)
            digests.append(None)
            phashes.append(None)
            thumbs.append(blank)
            signatures.append(None)
        else:
            digest, (phash, thumb, signature) = found
            digests.append(digest)
            phashes.append(phash)
            thumbs.append(thumb)
            signatures.append(signature)
    missing = [str(paths[k]) for k in range(len(paths)) if k in unreadable]
    at = [paths[k] for k in order]
    split_at = [splits[k] for k in order]
    uid_at = [uids[k] for k in order]
    key = (
        tuple(zip(uid_at, split_at, digests, strict=True)),
        max_hamming,
        min_correlation,
        min_detail,
        min_aligned,
    )
    if key in memo._found:
        return [dict(p) for p in memo._found[key]], missing
    # The same files in other splits (the build's next round) reuse the search and verdicts.
    files = (tuple(zip(uid_at, digests, strict=True)), *key[1:])
    report = find_duplicates(
        [None] * len(thumbs),  # exact copies are near copies at distance 0
        phashes,
        thumbs.__getitem__,
        signatures=signatures,
        content=lambda i: _file_content(at[i]),
        max_hamming=max_hamming,
        min_correlation=min_correlation,
        min_detail=min_detail,
        min_aligned=min_aligned,
        only_across=split_at,
        progress=progress,
        cache=memo._searches.setdefault(files, {}),
    )
    pairs = [
        {
            "uid_a": uid_at[p.a],
            "uid_b": uid_at[p.b],
            "splits": [split_at[p.a], split_at[p.b]],
            "hamming": p.hamming,
            "correlation": p.correlation,
            "detail": p.detail,
            "aligned": p.aligned,
        }
        for p in report.pairs
        if split_at[p.a] != split_at[p.b]
    ]
    memo._found[key] = [dict(p) for p in pairs]
    return pairs, missing


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


def _confounding(manifest: pd.DataFrame, classified: bool = True) -> list[str]:
    """Label x source and label x age warnings; the first two only where the classes are the
    labels a model learns (not where they only stratify a segmentation, detection or
    regression split)."""
    warnings = []
    classes = sorted(manifest["class"].unique())
    if len(classes) == 1 and classified:
        warnings.append(
            f"only class {classes[0]} is present: a model cannot learn to tell it from "
            "anything; add sources that have the recipe's other classes"
        )
    table = manifest.groupby(["class", "source"]).size().unstack(fill_value=0)
    for name in classes:
        row = table.loc[name]
        top = str(row.idxmax())
        share = row.max() / row.sum()
        others = table.drop(index=name)[top].sum() if len(classes) > 1 else 0
        if share >= 0.9 and others == 0 and classified:
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
