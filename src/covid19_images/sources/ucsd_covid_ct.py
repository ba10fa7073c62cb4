"""COVID-CT-Dataset (UCSD-AI4H/COVID-CT; Zhao, Zhang, He and Xie, 2020).

2-D CT slices: 349 COVID-19 slices of 216 patients cut from figures of COVID-19 papers (medRxiv,
bioRxiv, NEJM, JAMA, Lancet, ...), and 397 non-COVID slices. Upstream ships the images as two
zips that must be unzipped in place::

    Images-processed/CT_COVID/2020.03.25.20037721-p27-181.png ...
    Images-processed/CT_NonCOVID/1093.png, 17%1.jpg ...
    Data-split/COVID/{train,val,test}CT_COVID.txt        (one file name per line)
    Data-split/NonCOVID/{train,val,test}CT_NonCOVID.txt
    COVID-CT-MetaInfo.xlsx                               (sheet positive_captions: COVID only)

Every image in the two folders is one record: ``attributes["format"] = "image-2d"`` (processed
like an X-ray image), ``attributes["hu"] = False`` (figures saved as 8-bit images: Hounsfield
units are lost), ``modality="CT"``, ``view="AXIAL"`` (upstream states no view; the collection is
of transverse chest CT sections, and every image checked is one). The class folder is
``finding_raw`` (``label_origin="folder"``): ``CT_COVID`` maps to ``covid19``, ``CT_NonCOVID``
to ``other_finding``, not ``normal``: the non-COVID slices come from MedPix, LUNA, Radiopaedia
and PubMed Central papers and mix normal lungs with other diseases (fibrosis, nodules, tumours,
other infections) with no finding per image (see the crosswalk). Each gets the tag
``non-covid-mixed``. ``upstream_split`` is the split file that lists the image.

Patients (several slices per patient, so a build splits by patient):

- COVID images: ``Patient ID`` of the meta sheet row of the image (``ucsd-covid-ct:Patient 12``;
  the sheet names 83 files without their ``.png``, so rows match by name stem). Age and sex come
  from the same row (``Young Child`` is not a number: a ``bad-value`` problem, kept).
- A COVID image without a meta row falls back to its paper: the file name up to ``-p<page>-``
  (``2020.03.25.20037721-p27-181.png`` is preprint ``2020.03.25.20037721``) or, for names
  without a page (``PIIS0140673620303603%2.png``, ``PIIS0140673620302117_1.png``), the name
  without its ``%k`` / ``_k`` panel suffix: ``ucsd-covid-ct:paper-<id>``, tag
  ``patient-from-paper``. A paper can show several patients, so this groups more than needed,
  which only makes a patient-grouped split stricter.
- Non-COVID images have no metadata. ``17%0.jpg`` and ``17%1.jpg`` are panels of one figure and
  become one patient ``ucsd-covid-ct:noncovid-jpg-17`` (tag ``patient-from-file-name``). The
  ``.png`` and ``.jpg`` numbers are kept apart (``noncovid-png-14`` is not ``noncovid-jpg-14``):
  they come from different upstream sources, and upstream's own split keeps ``14.png`` (train)
  apart from ``14%0.jpg`` ... (test) while never separating the panels of one ``%`` figure.

Checks: a split-file line naming an absent image is ``missing-file`` (``skipped``); an image no
split file lists is kept with ``upstream_split=None`` and one ``orphan-file`` problem
(``kept``); a patient that upstream's split puts into more than one split is one ``bad-value``
problem (``kept``; builds split by patient anyway). On the whole collection upstream's COVID
split is patient-disjoint by the meta sheet, and its non-COVID split by the grouping above.

If an image folder is absent but its zip is there, the adapter does not read inside the zip (the
rest of the pipeline reads plain files): one ``missing-file`` problem on the zip says to unzip it
in place, and that class's split lines are not reported one by one.

``%`` in file names is taken literally (never URL-decoded). Licence: none named; the README says
all copyrights belong to the authors and publishers of the source papers. Cite: Zhao J, Zhang Y,
He X, Xie P. COVID-CT-Dataset: a CT scan dataset about COVID-19. arXiv:2003.13865 (2020).

Example:
    >>> paper_id("2020.03.25.20037721-p27-181.png"), paper_id("PIIS0140673620303603%2.png")
    ('2020.03.25.20037721', 'PIIS0140673620303603')
    >>> from covid19_images.sources import ingest
    >>> result = ingest("ucsd-covid-ct", mirror="../shared/sources")  # doctest: +SKIP
    >>> len(result.records), result.problems.summary()  # doctest: +SKIP
    (60, 'no input problems; also 686 rows whose file is absent (missing-file 686)')
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from covid19_images.problems import ProblemLog
from covid19_images.records import Record, scoped_patient
from covid19_images.sources.base import (
    Adapter,
    FileIndex,
    parse_age,
    parse_sex,
    read_text,
    read_workbook,
)
from covid19_images.sources.registry import register

IMAGES: Final = "Images-processed"
CLASSES: Final = (("CT_COVID", "COVID"), ("CT_NonCOVID", "NonCOVID"))
"""(image folder, Data-split folder) per class; the image folder is ``finding_raw``."""
SPLITS: Final = ("train", "val", "test")
META: Final = "COVID-CT-MetaInfo.xlsx"
SHEET: Final = "positive_captions"
META_REQUIRED: Final = ("File name", "Patient ID")

_PAGE = re.compile(r"^(?P<paper>.+?)-p\d+-")
_PANEL = re.compile(r"(?:%\d+|_\d+)$")
_PREPRINT = re.compile(r"^20\d\d\.\d\d\.\d\d\.\d+$")


def _stem(name: str) -> str:
    """The file name without an image extension, case-folded (the sheet omits some ``.png``)."""
    text = name.strip()
    head, dot, ext = text.rpartition(".")
    if dot and ext.casefold() in {"png", "jpg", "jpeg"}:
        text = head
    return text.casefold()


def paper_id(name: str) -> str:
    """The paper a COVID file name comes from: the name before ``-p<page>-``, else without its
    ``%k`` or ``_k`` panel suffix.

    Example:
        >>> paper_id("bmj.m606.full-p4-22%2.png"), paper_id("PIIS0140673620301549_2.png")
        ('bmj.m606.full', 'PIIS0140673620301549')
    """
    text = name.strip()
    head, dot, ext = text.rpartition(".")
    if dot and ext.casefold() in {"png", "jpg", "jpeg"}:
        text = head
    match = _PAGE.match(text)
    return match.group("paper") if match else _PANEL.sub("", text)


def noncovid_group(name: str) -> str:
    """The patient group of a non-COVID file: its number without the ``%k`` panel, by type.

    Example:
        >>> noncovid_group("17%1.jpg"), noncovid_group("17%0.jpg"), noncovid_group("1093.png")
        ('noncovid-jpg-17', 'noncovid-jpg-17', 'noncovid-png-1093')
    """
    head, _, ext = name.strip().rpartition(".")
    base = head.split("%", 1)[0] if head else name.strip()
    return f"noncovid-{ext.casefold() or 'none'}-{base}"


@dataclass(frozen=True)
class _Meta:
    """What the meta sheet says about one COVID image."""

    row: int
    patient: str
    age: str
    sex: str
    doi: str


@register
class UcsdCovidCt(Adapter):
    """Adapter for ``UCSD-AI4H/COVID-CT`` (images unzipped in ``Images-processed``)."""

    source = "ucsd-covid-ct"

    def records(self, root: Path, log: ProblemLog) -> list[Record]:
        meta = self._meta(root, log)
        records: list[Record] = []
        for folder, split_dir in CLASSES:
            base = f"{IMAGES}/{folder}"
            if not (root / base).is_dir():
                self._absent_folder(root, base, split_dir, log)
                continue
            index = FileIndex.scan(root, base)
            by_name = {Path(rel).name.casefold(): rel for rel in index.files.values()}
            splits = self._splits(root, base, split_dir, by_name, log)
            for rel in index.files.values():
                records.append(self._record(rel, folder, splits.get(rel), meta, log))
        self._check_split_leaks(records, log)
        return records

    def _record(
        self,
        rel: str,
        folder: str,
        split: tuple[str, str, int] | None,
        meta: dict[str, _Meta],
        log: ProblemLog,
    ) -> Record:
        name = Path(rel).name
        record = Record(
            source=self.source,
            path_raw=rel,
            modality="CT",
            view="AXIAL",
            finding_raw=folder,
            label_origin="folder",
            attributes={"format": "image-2d", "hu": False},
        )
        if split is None:
            log.add(
                self.source,
                rel,
                None,
                "orphan-file",
                "kept",
                "no Data-split file lists this image; kept without an upstream split",
            )
            record.problems.append("orphan-file")
        else:
            record.upstream_split, record.attributes["split_file"], record.source_row = split
        self.label(record, log, rel)
        if folder == "CT_NonCOVID":
            record.patient_id = scoped_patient(self.source, noncovid_group(name))
            record.tags += ["non-covid-mixed", "patient-from-file-name"]
            return record
        paper = paper_id(name)
        record.attributes["paper"] = paper
        if _PREPRINT.match(paper):
            record.attributes["doi"] = f"10.1101/{paper}"
        row = meta.get(_stem(name))
        if row is None or not row.patient:
            record.patient_id = scoped_patient(self.source, f"paper-{paper}")
            record.tags.append("patient-from-paper")
            return record
        record.patient_id = scoped_patient(self.source, row.patient)
        record.attributes["meta_row"] = row.row
        if row.doi:
            record.attributes["doi"] = row.doi
        record.age = parse_age(row.age)
        record.sex = parse_sex(row.sex)
        for field, raw, parsed in (("age", row.age, record.age), ("sex", row.sex, record.sex)):
            if raw and parsed is None:
                log.add(
                    self.source,
                    rel,
                    row.row,
                    "bad-value",
                    "kept",
                    f"{META} row {row.row}: {field} {raw!r} is not understood; left empty",
                )
                record.problems.append("bad-value")
        return record

    def _absent_folder(self, root: Path, base: str, split_dir: str, log: ProblemLog) -> None:
        """One problem for a class folder that is not there (zipped or missing)."""
        lines = sum(
            len(_lines(root / f"Data-split/{split_dir}/{s}CT_{split_dir}.txt")) for s in SPLITS
        )
        zipped = root / f"{base}.zip"
        if zipped.is_file():
            detail = (
                f"the images are still zipped: unzip {base}.zip in place so that {base}/ holds "
                f"them; the {lines} images its split files list were not read"
            )
            log.add(self.source, f"{base}.zip", None, "missing-file", "skipped", detail)
        else:
            detail = (
                f"folder {base}/ is absent; the {lines} images its split files list are missing"
            )
            log.add(self.source, base, None, "missing-file", "skipped", detail)

    def _splits(
        self,
        root: Path,
        base: str,
        split_dir: str,
        by_name: dict[str, str],
        log: ProblemLog,
    ) -> dict[str, tuple[str, str, int]]:
        """Image path → (split, split file, line) from the three split files of one class."""
        found: dict[str, tuple[str, str, int]] = {}
        for split in SPLITS:
            rel = f"Data-split/{split_dir}/{split}CT_{split_dir}.txt"
            if not (root / rel).is_file():
                log.add(self.source, rel, None, "unreadable-metadata", "skipped", "not found")
                continue
            text = read_text(root / rel, self.source, log, rel)
            for n, name in enumerate((text or "").splitlines(), 1):
                name = name.strip()
                if not name:
                    continue
                image = by_name.get(name.casefold())
                if image is None:
                    log.add(
                        self.source,
                        f"{base}/{name}",
                        n,
                        "missing-file",
                        "skipped",
                        f"{rel} line {n}",
                    )
                    continue
                if image in found:
                    first = found[image]
                    log.add(
                        self.source,
                        image,
                        n,
                        "duplicate-row",
                        "skipped",
                        f"{rel} line {n} lists the image again ({first[1]} line {first[2]} first)",
                    )
                    continue
                found[image] = (split, rel, n)
        return found

    def _meta(self, root: Path, log: ProblemLog) -> dict[str, _Meta]:
        """File stem (case-folded) → meta sheet facts; empty (logged) when the sheet is unusable."""
        path = root / META
        if not path.is_file():
            log.add(
                self.source,
                META,
                None,
                "unreadable-metadata",
                "skipped",
                "meta sheet not found; COVID patients are grouped by paper",
            )
            return {}
        table = read_workbook(
            path,
            META,
            self.source,
            log,
            META_REQUIRED,
            sheet=SHEET,
            why="; COVID patients are grouped by paper",
        )
        if table is None:
            return {}
        meta: dict[str, _Meta] = {}
        for row in table.to_dict("records"):
            n = int(row["_row"])
            name = str(row["File name"]).strip()
            if not name:
                continue  # a caption continuation line (the sheet's last row) names no image
            key = _stem(name)
            if key in meta:
                log.add(
                    self.source,
                    META,
                    n,
                    "duplicate-row",
                    "skipped",
                    f"rows {meta[key].row} and {n} describe the same image {name!r}",
                )
                continue
            meta[key] = _Meta(
                row=n,
                patient=" ".join(str(row["Patient ID"]).split()),
                age=str(row.get("Age", "")).strip(),
                sex=str(row.get("Gender", "")).strip(),
                doi=str(row.get("DOI", "")).strip(),
            )
        return meta

    def _check_split_leaks(self, records: list[Record], log: ProblemLog) -> None:
        """One problem per patient that upstream's split puts into more than one split."""
        splits: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for record in records:
            if record.patient_id and record.upstream_split:
                splits[record.patient_id][record.upstream_split].append(record.path_raw)
        for patient, by_split in sorted(splits.items()):
            if len(by_split) < 2:
                continue
            names = ", ".join(f"{s} ({len(v)})" for s, v in sorted(by_split.items()))
            first = min(path for paths in by_split.values() for path in paths)
            log.add(
                self.source,
                first,
                None,
                "bad-value",
                "kept",
                f"upstream's split puts patient {patient} in several splits: {names} images; "
                "builds split by patient, so only upstream_split is affected",
            )
            for record in records:
                if record.patient_id == patient:
                    record.problems.append("bad-value")


def _lines(path: Path) -> list[str]:
    """Non-blank lines of a split file; empty when it cannot be read."""
    try:
        return [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return []
