"""Measure both error kinds of the near-duplicate test on the real X-ray files.

Every pair of images of the copy-prone X-ray sources in the mirror is compared by brute force
(no index), with the same whole-frame 64 x 64 thumbnails and perceptual hashes the build uses.
"Unmistakable copies" (thumbnail correlation >= 0.97 and detail correlation >= 0.7) are the
reference the index must not miss; the script prints, for several Hamming thresholds, how many
candidates the test looks at, how many it confirms, how many reference copies it misses, and the
closest pairs it rejects, so the defaults can be checked on any mirror.

    python benchmarks/dedup_study.py --mirror ../shared/sources [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from covid19_images.dedup.near import (
    DEFAULT_MAX_HAMMING,
    DEFAULT_MIN_CORRELATION,
    DEFAULT_MIN_DETAIL,
    detail,
)
from covid19_images.process.image import decode_image

FOLDERS = {
    "ieee8023": "ieee8023-covid-chestxray/images",
    "figure1": "figure1-covid-chestxray/images",
    "actualmed": "actualmed-covid-chestxray/images",
    "darshan": "covid19-detection-xray-dataset",
    "covid19-image-dataset": "covid19-image-dataset",
    "zhanglab": "zhanglab-chest-xrays",
}


def _standardise(rows: np.ndarray) -> np.ndarray:
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows / (np.linalg.norm(rows, axis=1, keepdims=True) + 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", type=Path, default=Path("../shared/sources"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    paths: list[Path] = []
    for folder in FOLDERS.values():
        for path in sorted((args.mirror / folder).rglob("*")):
            if path.suffix.lower() in {".jpg", ".jpeg", ".png"} and "Oversampled" not in str(path):
                paths.append(path)
    hashes, thumbs, details = [], [], []
    for path in paths:
        decoded = decode_image(path, sizes=(224,))
        assert decoded.thumb is not None
        hashes.append(int(decoded.phash, 16))
        thumbs.append(decoded.thumb.astype(np.float64).ravel())
        details.append(detail(decoded.thumb).ravel())
    raw = _standardise(np.array(thumbs))
    fine = _standardise(np.array(details))
    corr, corr_detail = raw @ raw.T, fine @ fine.T
    values = np.array(hashes, dtype=np.uint64)
    xor = values[:, None] ^ values[None, :]
    ham = np.zeros(xor.shape, dtype=np.int64)
    for bit in range(64):
        ham += ((xor >> np.uint64(bit)) & np.uint64(1)).astype(np.int64)
    upper = np.triu_indices(len(paths), 1)
    c, d, h = corr[upper], corr_detail[upper], ham[upper]
    reference = (c >= 0.97) & (d >= 0.7)
    rule = (c >= DEFAULT_MIN_CORRELATION) & (d >= DEFAULT_MIN_DETAIL)
    sweep = []
    for t in (6, 8, 10, 12, 14, 16):
        candidates = h <= t
        confirmed = candidates & rule
        sweep.append(
            {
                "max_hamming": t,
                "candidates": int(candidates.sum()),
                "confirmed": int(confirmed.sum()),
                "reference_copies_missed": int((reference & ~confirmed).sum()),
                "confirmed_beyond_reference": int((confirmed & ~reference).sum()),
            }
        )
    rejected = (h <= DEFAULT_MAX_HAMMING) & ~rule
    confirmed = (h <= DEFAULT_MAX_HAMMING) & rule
    result = {
        "images": len(paths),
        "pairs": len(c),
        "reference_copies": int(reference.sum()),
        "sweep": sweep,
        "defaults": {
            "max_hamming": DEFAULT_MAX_HAMMING,
            "min_correlation": DEFAULT_MIN_CORRELATION,
            "min_detail": DEFAULT_MIN_DETAIL,
        },
        "confirmed_min_correlation": round(float(c[confirmed].min()), 3),
        "confirmed_min_detail": round(float(d[confirmed].min()), 3),
        "rejected_max_correlation": round(float(c[rejected].max()), 3),
        "rejected_max_detail": round(float(d[rejected].max()), 3),
        # Distinct films the whole-thumbnail test alone would merge (within 16 bits).
        "raw_only_would_merge": int(
            ((h <= 16) & (c >= DEFAULT_MIN_CORRELATION) & (d < DEFAULT_MIN_DETAIL)).sum()
        ),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{result['images']} images, {result['pairs']} pairs, "
        f"{result['reference_copies']} unmistakable copies"
    )
    for row in sweep:
        print(row)
    for key in (
        "confirmed_min_correlation",
        "confirmed_min_detail",
        "rejected_max_correlation",
        "rejected_max_detail",
        "raw_only_would_merge",
    ):
        print(f"{key}: {result[key]}")


if __name__ == "__main__":
    main()
