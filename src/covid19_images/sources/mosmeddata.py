"""MosMedData: Chest CT Scans with COVID-19 Related Findings (COVID19_1110, Moscow, 2020).

1,110 chest CT studies, one per patient, as NIfTI volumes in one folder per grade, and 50 binary
lesion masks (ground-glass opacities and consolidation as one class)::

    dataset_registry.csv        (or .xlsx: study_id, category, study_file, mask_file)
    studies/CT-0/study_0001.nii.gz ... studies/CT-4/study_BBBB.nii.gz
    masks/study_0255_mask.nii.gz ...

Each registry row whose study file is present becomes one volume record: ``path_raw`` is the
study file, ``attributes["format"] = "nifti"``, ``attributes["hu"] = True``, ``severity`` is the
category as ``ct0`` ... ``ct4`` and the label comes from the category through the crosswalk
(CT-0, "normal lung tissue, no CT signs of viral pneumonia", is ``normal``; CT-1 to CT-4 are
``covid19``; ``label_origin="metadata"``). Grades were assigned from the CT alone, before the
conversion kept only every 10th slice. The patient is ``mosmeddata:<study_id>`` (README: each
study is a unique patient). A mask file present on disk goes to ``mask_paths`` with the mask map
``mosmed`` (value 1 = lesion) in ``attributes["mask_maps"]``.

Quirks handled here: the registry paths start with ``/`` (``/studies/CT-1/study_0255.nii.gz``):
the slash is stripped and the path resolved inside the source folder, case-insensitively; the
CSV starts with a UTF-8 byte-order mark (one ``bom`` problem, ``repaired``); the README's own
layout ships only ``dataset_registry.xlsx``, so the spreadsheet is read when no CSV is there.

A registry row whose study file is absent (the GitHub mirror has the registry and the masks but
none of the 21 GB of studies) is one ``missing-study`` problem (``skipped``); its detail names
the row's mask and whether it is there (rows without a mask do not mention one). A named mask
that is absent while its study is present is a ``missing-file`` problem on the kept record.
Study or mask files that no registry row names are ``orphan-file`` problems.

Licence: CC BY-NC-ND 3.0 (LICENSE file). Cite: Morozov et al., MosMedData: Chest CT Scans With
COVID-19 Related Findings Dataset, arXiv:2005.06465 (2020).

Example:
    >>> from covid19_images.sources import ingest
    >>> result = ingest("mosmeddata", mirror="../shared/sources")  # doctest: +SKIP
    >>> len(result.records), result.problems.summary()  # doctest: +SKIP
    (0, '1 input problem: bom 1; also 1110 rows whose file is absent (missing-study 1110)')
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pandas as pd

from covid19_images.problems import ProblemLog
from covid19_images.records import Record, scoped_patient
from covid19_images.sources.base import Adapter, FileIndex, read_table, read_workbook
from covid19_images.sources.registry import register

REGISTRIES: Final = ("dataset_registry.csv", "dataset_registry.xlsx", "dataset_registry.xls")
"""Registry file names tried in order: the mirror's CSV first, then upstream's spreadsheet."""
REQUIRED: Final = ("study_id", "category", "study_file")
NIFTI_SUFFIXES: Final = (".gz", ".nii")
MASK_MAP: Final = "mosmed"


def registry_path(value: str) -> str:
    """A registry path as a path inside the source folder (leading ``/`` or ``./`` removed).

    Example:
        >>> registry_path("/studies/CT-1/study_0255.nii.gz")
        'studies/CT-1/study_0255.nii.gz'
        >>> registry_path("  ./masks\\\\study_0255_mask.nii.gz "), registry_path("")
        ('masks/study_0255_mask.nii.gz', '')
    """
    text = value.strip().replace("\\", "/")
    while text.startswith(("/", "./")):
        text = text[2:] if text.startswith("./") else text[1:]
    return text


def severity(category: str) -> str | None:
    """``CT-0`` ... ``CT-4`` as ``ct0`` ... ``ct4``; None for anything else.

    Example:
        >>> severity("CT-3"), severity(" ct-0 "), severity("CT-5"), severity("")
        ('ct3', 'ct0', None, None)
    """
    text = category.strip().casefold().replace("-", "").replace(" ", "")
    return text if text in {"ct0", "ct1", "ct2", "ct3", "ct4"} else None


@register
class MosMedData(Adapter):
    """Adapter for MosMedData COVID19_1110 (the full release or the GitHub mirror)."""

    source = "mosmeddata"

    def records(self, root: Path, log: ProblemLog) -> list[Record]:
        files = FileIndex.scan(root, suffixes=NIFTI_SUFFIXES)
        rel, table = self._registry(root, log)
        if table is None:
            files.report_orphans(self.source, log, f"{rel} could not be read")
            return []
        licence = self.entry.license.spdx or self.entry.license.name
        seen: dict[str, int] = {}
        records: list[Record] = []
        for row in table.to_dict("records"):
            n = int(row["_row"])
            study_rel = registry_path(str(row["study_file"]))
            mask_rel = registry_path(str(row.get("mask_file", "")))
            if not study_rel:
                log.add(
                    self.source, rel, n, "bad-value", "skipped", f"{rel} row {n}: no study_file"
                )
                continue
            key = study_rel.casefold()
            if key in seen:
                log.add(
                    self.source,
                    study_rel,
                    n,
                    "duplicate-row",
                    "skipped",
                    f"{rel} rows {seen[key]} and {n} name the same study",
                )
                continue
            seen[key] = n
            study = _find(files, study_rel)
            mask = _find(files, mask_rel) if mask_rel else None
            if mask is not None:
                files.claim(mask)
            if study is None:
                log.add(
                    self.source,
                    study_rel,
                    n,
                    "missing-study",
                    "skipped",
                    f"{rel} row {n}: the study volume is absent" + _mask_note(mask_rel, mask),
                )
                continue
            files.claim(study)
            category = str(row["category"]).strip()
            record = Record(
                source=self.source,
                path_raw=study,
                source_row=n,
                patient_id=scoped_patient(self.source, row["study_id"]),
                study_id=Path(study).name.split(".")[0],
                modality="CT",
                view="AXIAL",
                finding_raw=category,
                label_origin="metadata",
                severity=severity(category),
                license=licence,
                attributes={"format": "nifti", "hu": True, "registry": rel},
            )
            self.label(record, log, study)
            if mask is not None:
                record.mask_paths = [mask]
                record.attributes["mask_maps"] = [MASK_MAP]
            elif mask_rel:
                log.add(
                    self.source,
                    mask_rel,
                    n,
                    "missing-file",
                    "kept",
                    f"{rel} row {n} names a mask that is absent; the study is kept without it",
                )
                record.problems.append("missing-file")
            records.append(record)
        files.report_orphans(self.source, log, f"no {rel} row names this file")
        return records

    def _registry(self, root: Path, log: ProblemLog) -> tuple[str, pd.DataFrame | None]:
        """The registry's relative path and its rows (None, logged, when unusable)."""
        names = {p.name.casefold(): p.name for p in root.iterdir()} if root.is_dir() else {}
        for wanted in REGISTRIES:
            rel = names.get(wanted)
            if rel is None:
                continue
            if rel.casefold().endswith(".csv"):
                return rel, read_table(root, rel, self.source, log, required=REQUIRED)
            return rel, _read_sheet(root / rel, rel, self.source, log)
        log.add(
            self.source,
            REGISTRIES[0],
            None,
            "unreadable-metadata",
            "skipped",
            "no dataset_registry.csv or dataset_registry.xlsx in the source folder",
        )
        return REGISTRIES[0], None


def _find(files: FileIndex, rel: str) -> str | None:
    """The indexed file ``rel`` names; ``.nii`` and ``.nii.gz`` stand for each other."""
    found = files.find(rel)
    if found is None and rel.casefold().endswith(".nii.gz"):
        found = files.find(rel[:-3])
    elif found is None and rel.casefold().endswith(".nii"):
        found = files.find(rel + ".gz")
    return found


def _mask_note(mask_rel: str, mask: str | None) -> str:
    """The end of a missing-study detail: only rows that name a mask mention one."""
    if not mask_rel:
        return ""
    if mask is not None:
        return f"; its mask {mask} is present (left out with it)"
    return f"; its mask {mask_rel} is absent too"


def _read_sheet(path: Path, rel: str, source: str, log: ProblemLog) -> pd.DataFrame | None:
    """The registry spreadsheet as strings with a 1-based ``_row``; None (logged) when unusable."""
    return read_workbook(path, rel, source, log, REQUIRED)
