"""De-identified DICOM copies of kept 2-D images, in the processed layer.

Both assemblies write one (X-ray images, the 2-D slices of a CT recipe), keyed by the data
root's de-identification salt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

from covid19_images.assemble.result import BuildError
from covid19_images.deid import SaltError, salt
from covid19_images.problems import ProblemLog
from covid19_images.process.dicom import write_secondary_capture
from covid19_images.process.executor import Executor, fails_as
from covid19_images.process.image import DecodeError, without_addresses
from covid19_images.records import Record

DICOM_VERSION = 1
"""Part of every DICOM's name and of the build's inputs fingerprint: raise it when the files
change."""


def deid_salt(base: Path) -> bytes:
    """The data root's de-identification salt; a :class:`BuildError` when it cannot be had."""
    try:
        return salt(base)
    except SaltError as exc:
        raise BuildError(str(exc)) from exc


@dataclass(frozen=True)
class _DicomTask:
    image: str
    record: Record
    out: str
    salt: bytes


def _dicom_failed(task: _DicomTask, reason: str) -> str | None:
    """A DICOM an engine gave up on: the image is kept without one, with a problem row."""
    return reason


@fails_as(_dicom_failed)
def _dicom_one(task: _DicomTask) -> str | None:
    """Worker: write one DICOM unless it is there; the error text, or None."""
    out = Path(task.out)
    if out.is_file():
        return None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_secondary_capture(Path(task.image), task.record, out, salt=task.salt)
    except DecodeError as exc:
        return f"{exc.kind}: {without_addresses(str(exc))}"
    return None


def write_dicoms(
    kept: list[Record],
    roots: dict[str, Path],
    cache: Path,
    salt: bytes,
    executor: Executor,
    log: ProblemLog,
) -> None:
    """A de-identified DICOM per record, named by a digest of everything in its header."""
    keyed = hmac.new(salt, b"covid19-images dicom", "sha256").hexdigest()[:16]  # salt changes
    tasks = []
    for r in kept:
        facts = [
            DICOM_VERSION,
            keyed,
            r.bits_stored,
            r.sha256_file,
            r.uid,
            r.patient_id,
            r.study_id,
            r.series_id,
            r.modality,
            r.view,
            r.sex,
            r.age,
            r.license,
            r.source,
        ]
        digest = hashlib.sha256(json.dumps(facts, default=str).encode()).hexdigest()[:16]
        r.dicom_path = f"dicom/{r.source}/{r.uid}-{digest}.dcm"
        tasks.append(
            _DicomTask(str(roots[r.source] / r.path_raw), r, str(cache / r.dicom_path), salt)
        )
    for r, error in zip(kept, executor.map(_dicom_one, tasks, "writing DICOM"), strict=True):
        if error is not None:
            log.add(
                r.source,
                r.path_raw,
                r.source_row,
                "unreadable-file",
                "kept",
                f"no DICOM written: {error}",
            )
            r.dicom_path = None
