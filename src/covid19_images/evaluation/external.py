"""What an external evaluation must leave out: copies of the training images and their patients.

Public collections copy each other, so a dataset built from other sources ("external") can still
hold films the model was trained on, or other films of its training patients; scoring them would
measure memory, not generalisation. :func:`external_overlap` finds, among the images of another
built dataset, those that are

- **copies** of a training image: the same source file (the same ``uid``), a copy the training
  build recorded and dropped (its ``duplicates.csv``; the other build's own recorded copies link
  the same way), the same decoded pixels (``sha256_pixels``), or a near copy judged by the
  build's own test (:func:`covid19_images.audit.report.cross_split_copies`: perceptual-hash
  candidates within the recipe's ``max_hamming``, confirmed on pixels) — or, without image files,
  by the perceptual hash alone within that radius;
- **same patient**: the same scoped ``patient_id`` as a training image, or the patient of a copy
  (a patient linked through a shared film).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from covid19_images.errors import EvaluationError

__all__ = ["Overlap", "external_overlap"]

Near = Literal["auto", "pixels", "hash", "none"]


@dataclass(frozen=True)
class Overlap:
    """The images of the external set to leave out, and why.

    Example:
        >>> o = Overlap(copies=("x",), same_patient=("y",), reasons={"x": "same pixels as a"})
        >>> o.counts()
        {'copies': 1, 'same_patient': 1, 'left_out': 2}
        >>> o.keep(pd.DataFrame({"uid": ["x", "y", "z"]}))["uid"].tolist()
        ['z']
    """

    copies: tuple[str, ...]
    """Uids (of the external set) that are copies of training images."""
    same_patient: tuple[str, ...]
    """Uids, not copies themselves, of patients who have images in training."""
    reasons: dict[str, str] = field(default_factory=dict)
    """Why each uid is left out (the training image or patient it matches)."""
    near: str = "none"
    """How near copies were judged: ``pixels`` (the build's test), ``hash`` or ``none``."""
    max_hamming: int | None = None
    """The perceptual-hash radius of near-copy candidates."""

    @property
    def left_out(self) -> tuple[str, ...]:
        """Every uid to leave out, sorted."""
        return tuple(sorted({*self.copies, *self.same_patient}))

    @property
    def uids(self) -> tuple[str, ...]:
        """The same as :attr:`left_out`: every uid to leave out."""
        return self.left_out

    def counts(self) -> dict[str, int]:
        """``{"copies": n, "same_patient": n, "left_out": n}``."""
        return {
            "copies": len(self.copies),
            "same_patient": len(self.same_patient),
            "left_out": len(self.left_out),
        }

    def keep(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``frame`` (with a ``uid`` column) that are not left out."""
        return frame[~frame["uid"].astype(str).isin(set(self.left_out))]


@dataclass
class _Side:
    name: str
    manifest: pd.DataFrame
    root: Path | None = None
    duplicates: pd.DataFrame | None = None
    dedup: dict[str, Any] = field(default_factory=dict)


def _load(source: pd.DataFrame | Path | str, name: str) -> _Side:
    if isinstance(source, pd.DataFrame):
        frame = source
        side = _Side(name, frame)
    else:
        root = Path(source)
        try:
            frame = pd.read_parquet(root / "manifest.parquet")
        except (OSError, ValueError) as exc:
            raise EvaluationError(
                f"{root} is not a built dataset (no readable manifest.parquet): {exc}"
            ) from None
        duplicates = None
        if (root / "duplicates.csv").is_file():
            try:
                duplicates = pd.read_csv(root / "duplicates.csv", dtype=str)
            except (OSError, ValueError) as exc:
                raise EvaluationError(f"{root}/duplicates.csv cannot be read: {exc}") from None
        dedup: dict[str, Any] = {}
        try:
            lock = json.loads((root / "lock.json").read_text(encoding="utf-8"))
            found = lock["recipe"]["dedup"]
            dedup = dict(found) if isinstance(found, dict) else {}
        except (OSError, ValueError, KeyError, TypeError):
            pass
        side = _Side(name, frame, root, duplicates, dedup)
    if "uid" not in side.manifest.columns:
        raise EvaluationError(f"the {name} manifest has no 'uid' column")
    return side


def _present(values: pd.Series) -> pd.Series:
    """Non-missing, non-blank values as strings (missing elsewhere)."""
    text = values.astype("string").str.strip()
    return text.where(values.notna() & (text != ""))


class _Groups:
    """Union-find over uids linked by recorded copies."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _recorded(sides: Sequence[_Side]) -> _Groups:
    groups = _Groups()
    for side in sides:
        pairs = side.duplicates
        if pairs is None or not {"uid_a", "uid_b"} <= set(pairs.columns):
            continue
        for a, b in zip(pairs["uid_a"], pairs["uid_b"], strict=True):
            if isinstance(a, str) and isinstance(b, str) and a and b:
                groups.union(a, b)
    return groups


def _images(side: _Side, rows: pd.DataFrame) -> tuple[list[int], list[Path]]:
    """Positions in ``rows`` of 2-D images with a file, and the files."""
    if side.root is None or "path" not in rows.columns:
        return [], []
    at: list[int] = []
    paths: list[Path] = []
    for k, rel in enumerate(rows["path"].tolist()):
        if isinstance(rel, str) and rel.lower().endswith(".png"):
            at.append(k)
            paths.append(side.root / rel)
    return at, paths


def _near_by_pixels(
    train: _Side,
    t_rows: pd.DataFrame,
    other: _Side,
    o_rows: pd.DataFrame,
    thresholds: dict[str, Any],
    progress: bool,
) -> list[tuple[int, int]]:
    """``(train position, other position)`` of near copies, by the build's own pixel test."""
    from covid19_images.audit.report import cross_split_copies

    t_at, t_paths = _images(train, t_rows)
    o_at, o_paths = _images(other, o_rows)
    if not t_at or not o_at:
        return []
    keys = [f"t{k}" for k in t_at] + [f"o{k}" for k in o_at]
    pairs, unreadable = cross_split_copies(
        t_paths + o_paths,
        ["train"] * len(t_at) + ["other"] * len(o_at),
        keys,
        progress=progress,
        **thresholds,
    )
    if unreadable:
        raise EvaluationError(
            f"{len(unreadable)} image files listed in the manifests cannot be read"
            f" (first: {unreadable[0]}); check the dataset folders or use near='hash'"
        )
    found = []
    for pair in pairs:
        a, b = pair["uid_a"], pair["uid_b"]
        t, o = (a, b) if a.startswith("t") else (b, a)
        found.append((int(t[1:]), int(o[1:])))
    return found


def _near_by_hash(
    t_rows: pd.DataFrame, o_rows: pd.DataFrame, max_hamming: int
) -> list[tuple[int, int]]:
    """``(train position, other position)`` whose perceptual hashes are within the radius."""
    from covid19_images.dedup.near import candidate_pairs

    def hashes(rows: pd.DataFrame) -> tuple[list[int], list[int]]:
        at: list[int] = []
        values: list[int] = []
        if "phash" not in rows.columns:
            return at, values
        for k, h in enumerate(rows["phash"].tolist()):
            if isinstance(h, str) and h.strip():
                try:
                    values.append(int(h, 16))
                except ValueError:
                    continue
                at.append(k)
        return at, values

    t_at, t_values = hashes(t_rows)
    o_at, o_values = hashes(o_rows)
    if not t_at or not o_at:
        return []
    found = []
    n = len(t_at)
    for i, j in candidate_pairs(t_values + o_values, max_hamming).tolist():
        if i < n <= j:  # i < j always: a training hash, then an other one
            found.append((t_at[i], o_at[j - n]))
    return found


def external_overlap(
    train: pd.DataFrame | Path | str,
    other: pd.DataFrame | Path | str,
    *,
    splits: Sequence[str] = ("train",),
    near: Near = "auto",
    max_hamming: int | None = None,
    min_correlation: float | None = None,
    min_detail: float | None = None,
    min_aligned: float | None = None,
    progress: bool = False,
) -> Overlap:
    """The images of ``other`` that are copies of ``train``'s training images or share a patient.

    Args:
        train: The run's dataset folder (``manifest.parquet``, and ``duplicates.csv`` and
            ``lock.json`` where present), or its manifest as a frame (then without recorded
            copies or files).
        other: The external dataset: a built dataset's folder, or its manifest as a frame.
        splits: The splits of ``train`` the model learnt from.
        near: How near copies are judged: ``"pixels"`` (the build's test on both folders'
            image files: hash candidates confirmed on pixels), ``"hash"`` (the perceptual hash
            alone within ``max_hamming``: may also leave out look-alike films of other
            patients), ``"none"`` (same file, recorded copy or same pixels only), or
            ``"auto"`` (pixels when both are folders, else hash).
        max_hamming: The candidates' hash radius; with the pixel thresholds, by default those
            of the training build's recipe (``lock.json``), else the package defaults.
        min_correlation: See :func:`covid19_images.dedup.near.find_duplicates`.
        min_detail: See :func:`covid19_images.dedup.near.find_duplicates`.
        min_aligned: See :func:`covid19_images.dedup.near.find_duplicates`.
        progress: Show progress while the image files are hashed.

    Raises:
        EvaluationError: A folder without a manifest, no ``uid`` column, no training rows,
            unreadable image files for ``near="pixels"``.

    Example:
        >>> run_data, other = "datasets/xray-covid", "datasets/xray-other"
        >>> overlap = external_overlap(run_data, other)  # doctest: +SKIP
        >>> overlap.counts()  # doctest: +SKIP
        {'copies': 12, 'same_patient': 30, 'left_out': 42}
        >>> external = overlap.keep(predictions)  # doctest: +SKIP
    """
    from covid19_images.dedup.near import (
        DEFAULT_MAX_HAMMING,
        DEFAULT_MIN_ALIGNED,
        DEFAULT_MIN_CORRELATION,
        DEFAULT_MIN_DETAIL,
    )

    if near not in ("auto", "pixels", "hash", "none"):
        raise EvaluationError(f"near must be auto, pixels, hash or none, got {near!r}")
    t_side, o_side = _load(train, "training"), _load(other, "external")
    t_rows = t_side.manifest
    if "split" in t_rows.columns:
        t_rows = t_rows[t_rows["split"].astype(str).isin([str(s) for s in splits])]
    t_rows = t_rows.reset_index(drop=True)
    if len(t_rows) == 0:
        raise EvaluationError(f"the training manifest has no rows of splits {list(splits)}")
    o_rows = o_side.manifest.reset_index(drop=True)
    settings = {
        "max_hamming": DEFAULT_MAX_HAMMING,
        "min_correlation": DEFAULT_MIN_CORRELATION,
        "min_detail": DEFAULT_MIN_DETAIL,
        "min_aligned": DEFAULT_MIN_ALIGNED,
    }
    settings.update({k: v for k, v in t_side.dedup.items() if k in settings and v is not None})
    given = {
        "max_hamming": max_hamming,
        "min_correlation": min_correlation,
        "min_detail": min_detail,
        "min_aligned": min_aligned,
    }
    settings.update({k: v for k, v in given.items() if v is not None})
    if near == "auto":
        near = "pixels" if t_side.root is not None and o_side.root is not None else "hash"
    if near == "pixels" and (t_side.root is None or o_side.root is None):
        raise EvaluationError("near='pixels' needs both datasets as folders (with their images)")

    t_uids = t_rows["uid"].astype(str).tolist()
    o_uids = o_rows["uid"].astype(str).tolist()
    reasons: dict[str, str] = {}

    def mark(k: int, why: str) -> None:
        reasons.setdefault(o_uids[k], why)

    training = set(t_uids)
    groups = _recorded([t_side, o_side])
    roots = {groups.find(u): u for u in t_uids if u in groups.parent}
    for k, uid in enumerate(o_uids):
        if uid in training:
            mark(k, "the same source file as a training image")
        elif uid in groups.parent and groups.find(uid) in roots:
            mark(k, f"a recorded copy of training image {roots[groups.find(uid)]}")
    if "sha256_pixels" in t_rows.columns and "sha256_pixels" in o_rows.columns:
        t_sha = _present(t_rows["sha256_pixels"])
        by_sha = {h: t_uids[k] for k, h in enumerate(t_sha.tolist()) if isinstance(h, str)}
        for k, h in enumerate(_present(o_rows["sha256_pixels"]).tolist()):
            if isinstance(h, str) and h in by_sha:
                mark(k, f"the same pixels as training image {by_sha[h]}")
    if near == "pixels":
        pending = [k for k in range(len(o_rows)) if o_uids[k] not in reasons]
        found = _near_by_pixels(t_side, t_rows, o_side, o_rows.iloc[pending], settings, progress)
        for t, o in found:
            mark(pending[o], f"a near copy of training image {t_uids[t]} (pixels)")
    elif near == "hash":
        for t, o in _near_by_hash(t_rows, o_rows, int(settings["max_hamming"])):
            mark(o, f"a perceptual hash within {settings['max_hamming']} bits of {t_uids[t]}")
    copies = set(reasons)

    patients: dict[str, str] = {}
    if "patient_id" in t_rows.columns:
        for p in _present(t_rows["patient_id"]).dropna().unique().tolist():
            patients[str(p)] = "a training patient"
    o_patients = (
        _present(o_rows["patient_id"]).tolist()
        if "patient_id" in o_rows.columns
        else [None] * len(o_rows)
    )
    for k, p in enumerate(o_patients):
        if isinstance(p, str) and o_uids[k] in copies:
            patients.setdefault(p, f"linked through copy {o_uids[k]}")
    same_patient = []
    for k, p in enumerate(o_patients):
        if isinstance(p, str) and p in patients and o_uids[k] not in copies:
            same_patient.append(o_uids[k])
            reasons.setdefault(o_uids[k], f"patient {p}: {patients[p]}")
    return Overlap(
        copies=tuple(sorted(copies)),
        same_patient=tuple(sorted(set(same_patient))),
        reasons=reasons,
        near=near,
        max_hamming=int(settings["max_hamming"]) if near != "none" else None,
    )
