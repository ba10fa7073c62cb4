"""Zhang Lab paediatric chest X-rays (Kermany et al., Cell 2018; Mendeley "ChestXRay2017"; Kaggle
"Chest X-Ray Images (Pneumonia)").

Anterior-posterior chest radiographs of children aged one to five from Guangzhou Women and
Children's Medical Center, in class folders; no COVID-19 images (collected before the pandemic)::

    chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/<name>.jpeg     (val/ in the Kaggle copy only)

Every image is tagged ``paediatric`` (catalog entry: "children aged one to five", from the
Mendeley record's description). ``view`` is AP for every image: the collection's description
says the radiographs are anterior-posterior (there is no view per image); ``modality`` is ``XR``.
Upstream split: the ``train``/``test``/``val`` folders.

Labels and patients come from the class folder and the file name (upstream has no metadata):

- ``PNEUMONIA/person1003_virus_1685.jpeg``: the type word ``virus`` or ``bacteria`` gives
  ``finding_raw = "PNEUMONIA/virus"`` (``pneumonia_viral``) or ``"PNEUMONIA/bacteria"``
  (``pneumonia_bacterial``), ``label_origin="file_name"``; the patient is ``person1003``. The same
  person number occurs with both words (``person1499_bacteria_3915``, ``person1499_virus_2609``)
  and upstream does not say whether the numbering is shared, so the person number alone is the
  patient (the catalog entry's advice): two such images are one patient, which can only make a
  patient-grouped split stricter.
- ``NORMAL/IM-0115-0001.jpeg`` and ``NORMAL/NORMAL2-IM-1094-0001-0001.jpeg``: ``finding_raw =
  "NORMAL"``, ``label_origin="folder"``; the patient is the name up to the ``IM-<number>``
  (``IM-0115``, ``NORMAL2-IM-1094``); the numbers after it count that child's images. The
  ``NORMAL2-`` prefix is kept: it marks a second series whose numbers upstream does not relate to
  the ``IM-`` ones.
- Mendeley V3 names (``NORMAL-1049278-0001.jpeg``, ``BACTERIA-40699-0001.jpeg``, ``VIRUS-...``)
  follow the release's documented scheme "(disease)-(randomized patient ID)-(image number by this
  patient)": the patient is the number, the type ``BACTERIA``/``VIRUS``.

These ids are derived from upstream's file-naming convention, not given in a metadata column.
A file whose name follows none of these forms is kept with ``patient_id=None`` and one
``bad-value`` problem (action ``kept``); a pneumonia image whose name gives no type keeps
``finding_raw = "PNEUMONIA"`` (``pneumonia_other``). A type word that contradicts the folder
(``NORMAL/person1_virus_6.jpeg``) gives ``"NORMAL/virus"``, which no crosswalk rule maps: the label
is ``unknown`` with an ``unmapped-finding`` problem.

Licence: CC BY 4.0 (Mendeley Data record, V2). Cite: D.S. Kermany, M. Goldbaum, W. Cai, et al.,
Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep Learning, Cell 172(5),
1122-1131, 2018; data: Kermany, Zhang, Goldbaum, Mendeley Data V2, doi:10.17632/rscbjbr9sj.2.

Example:
    >>> from covid19_images.sources import ingest
    >>> result = ingest("zhanglab", mirror="../shared/sources")  # doctest: +SKIP
    >>> len(result.records), result.records[0].patient_id  # doctest: +SKIP
    (39, 'zhanglab:NORMAL2-IM-0468')
"""

from __future__ import annotations

import re
from pathlib import Path

from covid19_images.problems import ProblemLog
from covid19_images.records import Record, scoped_patient
from covid19_images.sources.base import FolderAdapter
from covid19_images.sources.registry import register

TOP = "chest_xray"
SPLIT_FOLDERS = {"train": "train", "test": "test", "val": "val"}
VIEW = "anteroposterior"
"""The collection's description says "anterior-posterior"; this is the crosswalk's spelling."""

_PERSON = re.compile(r"^(?P<patient>person\d+)_(?P<kind>bacteria|virus)_\d+$", re.IGNORECASE)
_NORMAL = re.compile(r"^(?P<patient>(?:NORMAL2-)?IM-\d+)(?:-\d+)+$", re.IGNORECASE)
_V3 = re.compile(r"^(?P<kind>NORMAL|BACTERIA|VIRUS)-(?P<patient>\d+)-\d+$", re.IGNORECASE)


def parse_name(stem: str) -> tuple[str, str | None] | None:
    """``(patient, pneumonia type or None)`` from a file stem, or None if it has no known form.

    Example:
        >>> parse_name("person1003_virus_1685"), parse_name("NORMAL2-IM-1094-0001-0001")
        (('person1003', 'virus'), ('NORMAL2-IM-1094', None))
        >>> parse_name("BACTERIA-40699-0001"), parse_name("scan 7")
        (('40699', 'BACTERIA'), None)
    """
    if match := _PERSON.match(stem):
        return match["patient"], match["kind"]
    if match := _NORMAL.match(stem):
        return match["patient"], None
    if match := _V3.match(stem):
        kind = match["kind"]
        return match["patient"], None if kind.casefold() == "normal" else kind
    return None


@register
class Zhanglab(FolderAdapter):
    """Adapter for the Zhang Lab / Kermany ``chest_xray`` folders (Kaggle or Mendeley)."""

    source = "zhanglab"

    def describe(self, record: Record, parts: tuple[str, ...], log: ProblemLog) -> bool:
        if len(parts) != 4 or parts[0].casefold() != TOP:
            return False  # not chest_xray/<split>/<class>/<file>: reported as an orphan
        split = SPLIT_FOLDERS.get(parts[1].casefold())
        if split is None:
            return False
        record.upstream_split = split
        record.tags.append("paediatric")
        record.license = self.entry.license.spdx if self.entry.license else None
        self.view(record, VIEW, log, record.path_raw)
        parsed = parse_name(Path(parts[-1]).stem)
        if parsed is None:
            log.add(
                self.source,
                record.path_raw,
                None,
                "bad-value",
                "kept",
                "file name follows no Zhang Lab naming (person<n>_<type>_<m>, IM-<n>-<m>, "
                "NORMAL2-IM-<n>-<m>, <CLASS>-<n>-<m>): no patient id, type from the folder only",
            )
            record.problems.append("bad-value")
            return True
        patient, kind = parsed
        record.patient_id = scoped_patient(self.source, patient)
        if kind is not None:
            record.finding_raw = f"{parts[-2]}/{kind}"
            record.label_origin = "file_name"
        return True
