"""Deduplicate processed records: find copies, keep one preferred copy per cluster.

The preferred copy is the one with the richest metadata (a patient id, a finding, age, sex, view,
licence), then the larger image (an original rather than a downscaled copy), then the smaller uid,
so the choice is deterministic. The others leave the dataset with a ``duplicate`` problem naming
the copy that stayed, and every record remembers its cluster so that a split never separates a
film from its copies, and patients linked by a shared film are grouped too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from covid19_images.dedup.near import (
    DEFAULT_MAX_HAMMING,
    DEFAULT_MIN_ALIGNED,
    DEFAULT_MIN_CORRELATION,
    DEFAULT_MIN_DETAIL,
    DuplicateReport,
    Pair,
    find_duplicates,
)
from covid19_images.problems import ProblemLog
from covid19_images.process.pipeline import output_dir
from covid19_images.process.signature import Signature
from covid19_images.records import Record


@dataclass
class DedupResult:
    """Records to keep, the duplicate pairs found, and the candidates rejected."""

    kept: list[Record]
    pairs: pd.DataFrame
    """Confirmed pairs: uid_a, uid_b, source_a, source_b, exact, hamming, correlation, detail."""
    rejected: pd.DataFrame
    """Candidates within the hash distance that the pixel comparison rejected."""
    report: DuplicateReport


def richness(record: Record) -> tuple[int, int, str]:
    """Sort key of a copy: more metadata first, then more pixels, then the uid.

    Example:
        >>> a = Record(source="ieee8023", path_raw="a.jpg", patient_id="ieee8023:1", age=50.0)
        >>> b = Record(source="covid19-detection-xray-dataset", path_raw="0.jpeg")
        >>> sorted([b, a], key=richness)[0].source
        'ieee8023'
    """
    score = (
        3 * (record.patient_id is not None)
        + 2 * (record.label != "unknown")
        + (record.age is not None)
        + (record.sex is not None)
        + (record.view != "UNKNOWN")
        + (record.license is not None)
        - 5 * ("augmented" in record.tags)
    )
    return (-score, -((record.width or 0) * (record.height or 0)), record.uid)


def deduplicate(
    records: list[Record],
    cache: Path,
    log: ProblemLog,
    *,
    max_hamming: int = DEFAULT_MAX_HAMMING,
    min_correlation: float = DEFAULT_MIN_CORRELATION,
    min_detail: float = DEFAULT_MIN_DETAIL,
    min_aligned: float = DEFAULT_MIN_ALIGNED,
    progress: bool = False,
) -> DedupResult:
    """Find copies among processed records and keep one per cluster.

    Every record gets ``attributes["dup_cluster"]`` (the uid of the copy kept, for every member of
    a cluster); records that are not kept get a ``duplicate`` problem (action ``excluded``).

    Example:
        >>> result = deduplicate(records, cache, log)  # doctest: +SKIP
        >>> len(result.kept) <= len(records)  # doctest: +SKIP
        True
    """

    def image(i: int, name: str) -> np.ndarray:
        key = records[i].processed_key or ""
        with Image.open(output_dir(cache, key) / name) as img:
            return np.asarray(img.convert("L"))

    report = find_duplicates(
        [r.sha256_pixels for r in records],
        [r.phash for r in records],
        lambda i: image(i, "thumb.png"),
        signatures=[_signature(cache, r) for r in records],
        content=lambda i: image(i, "content.png"),
        max_hamming=max_hamming,
        min_correlation=min_correlation,
        min_detail=min_detail,
        min_aligned=min_aligned,
        progress=progress,
    )
    dropped: set[int] = set()
    for cluster in report.clusters:
        ordered = sorted(cluster, key=lambda i: richness(records[i]))
        keeper = records[ordered[0]]
        for i in cluster:
            records[i].attributes["dup_cluster"] = keeper.uid
        for i in ordered[1:]:
            copy = records[i]
            dropped.add(i)
            log.add(
                copy.source,
                copy.path_raw,
                copy.source_row,
                "duplicate",
                "excluded",
                f"copy of {keeper.source} {keeper.path_raw} (uid {keeper.uid}), which is kept",
            )
    kept = [r for i, r in enumerate(records) if i not in dropped]
    return DedupResult(
        kept, _pairs_frame(records, report.pairs), _pairs_frame(records, report.rejected), report
    )


def _signature(cache: Path, record: Record) -> Signature | None:
    """The copy-search signature kept with a record's processed outputs."""
    try:
        meta = json.loads(
            (output_dir(cache, record.processed_key or "") / "meta.json").read_text("utf-8")
        )
        return Signature.from_json(meta["signature"]) if meta.get("signature") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pairs_frame(records: list[Record], pairs: list[Pair]) -> pd.DataFrame:
    rows = [
        {
            "uid_a": records[p.a].uid,
            "uid_b": records[p.b].uid,
            "source_a": records[p.a].source,
            "source_b": records[p.b].source,
            "path_a": records[p.a].path_raw,
            "path_b": records[p.b].path_raw,
            "exact": p.exact,
            "hamming": p.hamming,
            "correlation": p.correlation,
            "detail": p.detail,
            "aligned": p.aligned,
        }
        for p in pairs
    ]
    columns = [
        "uid_a",
        "uid_b",
        "source_a",
        "source_b",
        "path_a",
        "path_b",
        "exact",
        "hamming",
        "correlation",
        "detail",
        "aligned",
    ]
    return pd.DataFrame(rows, columns=columns)
