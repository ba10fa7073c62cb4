"""COVID-19 CT Lung and Infection Segmentation Dataset (Ma Jun et al., Zenodo record 3757476).

20 axial CT volumes of COVID-19 patients (10 from Coronacases, 10 from Radiopaedia) with left
lung, right lung and infection masks by radiologists, each Zenodo zip unpacked into a folder named
after it::

    COVID-19-CT-Seg_20cases/coronacases_001.nii.gz … radiopaedia_40_86625_0.nii.gz
    Lung_and_Infection_Mask/<same name>   1 left lung, 2 right lung, 3 infection
    Lung_Mask/<same name>                 1 left lung, 2 right lung       (optional)
    Infection_Mask/<same name>            1 infection                     (optional)

One record per image volume (``attributes["format"] = "nifti"``), its masks in ``mask_paths``
with their :data:`~covid19_images.process.ct.masks.MASK_MAPS` ids (``zenodo-lung``,
``zenodo-infection``, ``zenodo-lung-infection``) in ``attributes["mask_maps"]``: every mask set
that is there, lungs first (the harmonised map gives lesions precedence anyway).

Every case is COVID-19 (the record's description): ``finding_raw = "COVID-19"``, ``label =
"covid19"``, ``label_origin = "metadata"``. The Coronacases volumes are in Hounsfield units
(``attributes["hu"] = True``); the Radiopaedia volumes were clipped to the lung window
[-1250, 250] HU and scaled to 0-255 (benchmark README), so they are not
(``attributes["hu"] = False``, tag ``not-hu``, ``attributes["scaled_from_window"] =
[-1250, 250]``).

Patients come from the case names: ``coronacases_001`` is its own patient; ``radiopaedia_<case>
_<study>_<n>`` belongs to Radiopaedia case ``<case>``, so the two volumes of cases 10 and 29 share
a patient (``zenodo-ct-seg:radiopaedia_10``), with ``study_id = "<case>_<study>"`` and
``series_id = "<n>"``. A name of neither form is kept without a patient (``bad-value``) and with
``hu`` unknown.

Problems: a mask whose image is absent is ``missing-study`` (skipped); an image without its
``Lung_and_Infection_Mask`` (or without its mask in an optional folder that is there) is kept
without it (``missing-file``, kept); other NIfTI files are ``orphan-file``.

Licence: CC BY 4.0 (Zenodo record; the scans keep their own terms). Cite: Ma Jun et al., COVID-19
CT Lung and Infection Segmentation Dataset (Version 1.0), Zenodo 2020,
doi:10.5281/zenodo.3757476.

Example:
    >>> from covid19_images.sources import ingest
    >>> result = ingest("zenodo-ct-seg", path="zenodo-ct-seg/")  # doctest: +SKIP
    >>> len(result.records), result.records[0].attributes["mask_maps"]  # doctest: +SKIP
    (20, ['zenodo-lung', 'zenodo-infection', 'zenodo-lung-infection'])
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from covid19_images.problems import ProblemLog
from covid19_images.records import Record, scoped_patient
from covid19_images.sources.base import Adapter, FileIndex, MaskFolders
from covid19_images.sources.medseg import FINDING, NIFTI_SUFFIXES, nifti_stem, niftis_in
from covid19_images.sources.registry import register

IMAGES: Final = "COVID-19-CT-Seg_20cases"
REQUIRED_MASKS: Final = "Lung_and_Infection_Mask"
MASKS: Final = (
    ("Lung_Mask", "zenodo-lung"),
    ("Infection_Mask", "zenodo-infection"),
    (REQUIRED_MASKS, "zenodo-lung-infection"),
)
"""Mask folders and their MASK_MAPS ids, in the order they are applied."""
RADIOPAEDIA_WINDOW: Final = (-1250.0, 250.0)
"""The HU window the Radiopaedia volumes were clipped to before scaling to 0-255."""

_CORONACASES = re.compile(r"^coronacases_(?:org_)?(?P<case>\d+)$", re.IGNORECASE)
_RADIOPAEDIA = re.compile(
    r"^radiopaedia_(?P<case>\d+)_(?P<study>\d+)_(?P<series>\d+)$", re.IGNORECASE
)


def case_of(stem: str) -> tuple[str, str | None, str | None, bool | None] | None:
    """``(patient, study, series, hu)`` from a case name, or None when it has neither form.

    Example:
        >>> case_of("coronacases_003"), case_of("radiopaedia_29_86491_1")
        (('coronacases_003', None, None, True), ('radiopaedia_29', '29_86491', '1', False))
        >>> case_of("scan")
    """
    if match := _CORONACASES.match(stem):
        return f"coronacases_{match['case']}", None, None, True
    if match := _RADIOPAEDIA.match(stem):
        case = match["case"]
        return f"radiopaedia_{case}", f"{case}_{match['study']}", match["series"], False
    return None


@register
class ZenodoCtSeg(Adapter):
    """Adapter for the COVID-19-CT-Seg volumes and their three mask sets."""

    source = "zenodo-ct-seg"

    def records(self, root: Path, log: ProblemLog) -> list[Record]:
        index = FileIndex.scan(root, suffixes=NIFTI_SUFFIXES)
        folders = {folder: niftis_in(index, folder) for folder in (IMAGES, *(f for f, _ in MASKS))}
        images = folders[IMAGES]
        pairing = MaskFolders(MASKS, folders, frozenset({REQUIRED_MASKS}))
        license_id = self.entry.license.spdx if self.entry.license else None
        records: list[Record] = []
        for key, image in sorted(images.items()):
            index.claim(image)
            name = Path(image).name
            record = Record(
                source=self.source,
                path_raw=image,
                modality="CT",
                view="AXIAL",
                finding_raw=FINDING,
                label_origin="metadata",
                license=license_id,
                attributes={"format": "nifti"},
            )
            parsed = case_of(nifti_stem(name))
            if parsed is None:
                log.add(
                    self.source,
                    image,
                    None,
                    "bad-value",
                    "kept",
                    "name is neither coronacases_<n> nor radiopaedia_<case>_<study>_<n>: "
                    "no patient, Hounsfield units unknown",
                )
                record.problems.append("bad-value")
                record.attributes["hu"] = None
            else:
                patient, record.study_id, record.series_id, hu = parsed
                record.patient_id = scoped_patient(self.source, patient)
                record.attributes["hu"] = hu
                if hu is False:
                    record.tags.append("not-hu")
                    record.attributes["scaled_from_window"] = list(RADIOPAEDIA_WINDOW)
            pairing.attach(record, key, index, log)
            self.label(record, log, image)
            records.append(record)
        pairing.report_unpaired(self.source, images, IMAGES, index, log)
        index.report_orphans(self.source, log, "not a file of the COVID-19-CT-Seg layout")
        return records
