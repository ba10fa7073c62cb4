"""COVID-19 Radiography Database (Kaggle tawsifurrahman; Qatar University and University of Dhaka).

Chest X-rays in four classes, each a folder with ``images/`` and ``masks/`` (lung masks) and a
metadata sheet ``<class>.metadata.xlsx`` with the columns ``FILE NAME, FORMAT, SIZE, URL``. The
database is a compilation: the ``URL`` column names the public collection each image was taken
from (BIMCV, SIRM, ieee8023, COVID-CXNet, eurorad, the Hannover ml-workgroup repository, the
RSNA Pneumonia Detection Challenge, the Kaggle chest-xray-pneumonia copy of the Zhang Lab
radiographs). Each record keeps it as ``attributes["upstream_url"]`` and, normalised by
:func:`upstream_collection`, as ``attributes["upstream_collection"]`` (the catalog id where the
collection has one), which is how deduplication knows which cross-source copies to expect.

Quirks handled here: ``FILE NAME`` has no extension (the image is
``<class>/images/<FILE NAME>.png``); ``Normal.metadata.xlsx`` writes ``NORMAL-1`` where the file
is ``Normal-1.png`` (files are found case-insensitively); ``SIZE`` says ``256*256`` for every
row while the released images are 299 x 299, so it is not kept (the process stage measures the
real size). There are no patient ids, so ``patient_id`` stays None.

Children: all Viral Pneumonia images and 1,341 Normal images come from the Kaggle
chest-xray-pneumonia dataset (URL column), i.e. the Zhang Lab / Guangzhou Women and Children's
Medical Center radiographs of children aged one to five (Kermany et al., Cell 2018,
doi:10.1016/j.cell.2018.02.010); rows with that URL get the tag ``paediatric``.

Licence: the Kaggle README states none; each image keeps the terms of the collection it came
from. Cite: Chowdhury et al., "Can AI help in screening Viral and COVID-19 pneumonia?", IEEE
Access 8, 2020 (doi:10.1109/ACCESS.2020.3010287), and Rahman et al., Computers in Biology and
Medicine 132, 104319, 2021.

Example:
    >>> upstream_collection("https://github.com/ieee8023/covid-chestxray-dataset")
    'ieee8023'
    >>> upstream_collection("https://www.kaggle.com/paultimothymooney/chest-xray-pneumonia")
    'zhanglab'
    >>> from covid19_images.sources import ingest
    >>> mirror = "../shared/sources"  # the real sheets, no images
    >>> result = ingest("covid19-radiography-database", mirror=mirror)  # doctest: +SKIP
    >>> len(result.records), result.problems.summary()  # doctest: +SKIP
    (0, 'no input problems; also 21165 rows whose file is absent (missing-file 21165)')
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pandas as pd

from covid19_images.problems import ProblemLog
from covid19_images.records import Record
from covid19_images.sources.base import Adapter, FileIndex, read_workbook
from covid19_images.sources.registry import register

DATASET: Final = "COVID-19_Radiography_Dataset"
CLASSES: Final = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
"""Class folder names, which are also the sheet names and ``finding_raw``."""
SHEET_NAMES: Final = ("{}.metadata.xlsx", "{}.matadata.xlsx")
"""Sheet file names tried per class (the second is a misspelling seen in an older release)."""
REQUIRED: Final = ("FILE NAME", "URL")

UPSTREAM_COLLECTIONS: Final[tuple[tuple[str, str, str], ...]] = (
    ("github.com", "/ieee8023/covid-chestxray-dataset", "ieee8023"),
    ("github.com", "/armiro/covid-cxnet", "covid-cxnet"),
    ("github.com", "/ml-workgroup/covid-19-image-repository", "ml-workgroup"),
    ("github.com", "/agchung/figure1-covid-chestxray-dataset", "figure1"),
    ("github.com", "/agchung/actualmed-covid-chestxray-dataset", "actualmed"),
    ("sirm.org", "", "sirm"),
    ("bimcv.cipf.es", "", "bimcv-covid19"),
    ("kaggle.com", "/c/rsna-pneumonia-detection-challenge", "rsna-pneumonia"),
    ("kaggle.com", "/paultimothymooney/chest-xray-pneumonia", "zhanglab"),
    ("eurorad.org", "", "eurorad"),
    ("radiopaedia.org", "", "radiopaedia"),
)
"""(host, path prefix, collection): the ``URL`` column → the collection an image was copied
from; the catalog id where the catalog has the collection. First match wins; an unknown URL keeps
its host."""
PAEDIATRIC_COLLECTIONS: Final = frozenset({"zhanglab"})


def upstream_collection(url: str) -> str | None:
    """The collection a ``URL`` value names: a catalog id, a short name, or the bare host.

    Example:
        >>> upstream_collection("https://bimcv.cipf.es/bimcv-projects/bimcv-covid19/#1590858128006")
        'bimcv-covid19'
        >>> upstream_collection("https://www.example.org/cases/1"), upstream_collection("  ")
        ('example.org', None)
    """
    text = url.strip()
    if not text:
        return None
    parts = urlsplit(text if "//" in text else f"//{text}")
    host = (parts.hostname or "").removeprefix("www.")
    path = parts.path.casefold().rstrip("/")
    for known_host, prefix, name in UPSTREAM_COLLECTIONS:
        if host == known_host and (path == prefix or path.startswith(f"{prefix}/")):
            return name
    return host or text


@register
class Covid19RadiographyDatabase(Adapter):
    """Adapter for the Kaggle COVID-19 Radiography Database (current release, four sheets)."""

    source = "covid19-radiography-database"

    def records(self, root: Path, log: ProblemLog) -> list[Record]:
        base = DATASET if (root / DATASET).is_dir() else ""
        prefix = f"{base}/" if base else ""
        index = FileIndex.scan(root)
        stems = {key.rsplit(".", 1)[0]: rel for key, rel in index.files.items()}
        records: list[Record] = []
        for cls in CLASSES:
            sheet = _find_sheet(root / base if base else root, cls)
            sheet_rel = f"{prefix}{sheet or SHEET_NAMES[0].format(cls)}"
            frame = _read_sheet(root / sheet_rel, sheet_rel, self.source, log)
            if frame is None:
                continue
            seen: dict[str, int] = {}
            for row in frame.to_dict("records"):
                n = int(row["_row"])
                name = row["FILE NAME"].strip()
                if not name:
                    if any(str(v).strip() for k, v in row.items() if k != "_row"):
                        log.add(
                            self.source, sheet_rel, n, "bad-value", "skipped", "blank FILE NAME"
                        )
                    continue
                if name.casefold() in seen:
                    log.add(
                        self.source,
                        sheet_rel,
                        n,
                        "duplicate-row",
                        "skipped",
                        f"rows {seen[name.casefold()]} and {n} name the same file {name!r}",
                    )
                    continue
                seen[name.casefold()] = n
                suffix = (row.get("FORMAT", "").strip().lower() or "png").lstrip(".")
                expected = f"{prefix}{cls}/images/{name}.{suffix}"
                found = index.find(expected) or stems.get(expected.rsplit(".", 1)[0].casefold())
                if found is None:
                    log.add(
                        self.source, expected, n, "missing-file", "skipped", f"{sheet_rel} row {n}"
                    )
                    continue
                index.claim(found)
                records.append(self._record(found, n, cls, row, index, stems, prefix))
                self.label(records[-1], log, found)
        for rel in index.orphans():
            detail = (
                "a lung mask whose image no metadata row names"
                if "/masks/" in f"/{rel}"
                else "no metadata sheet row names this image"
            )
            log.add(self.source, rel, None, "orphan-file", "skipped", detail)
        return records

    def _record(
        self,
        found: str,
        n: int,
        cls: str,
        row: Mapping[Any, Any],
        index: FileIndex,
        stems: dict[str, str],
        prefix: str,
    ) -> Record:
        record = Record(
            source=self.source,
            path_raw=found,
            source_row=n,
            modality="XR",
            finding_raw=cls,
            label_origin="folder",
        )
        url = str(row.get("URL", "")).strip()
        collection = upstream_collection(url)
        if collection:
            record.attributes = {"upstream_url": url, "upstream_collection": collection}
        if collection in PAEDIATRIC_COLLECTIONS:
            record.tags.append("paediatric")
        mask_rel = f"{prefix}{cls}/masks/{Path(found).name}"
        mask = index.find(mask_rel) or stems.get(mask_rel.rsplit(".", 1)[0].casefold())
        if mask is not None:
            index.claim(mask)
            record.mask_paths = [mask]
        return record


def _find_sheet(folder: Path, cls: str) -> str | None:
    """The sheet file of ``cls`` in ``folder``, matched case-insensitively."""
    if not folder.is_dir():
        return None
    names = {p.name.casefold(): p.name for p in folder.iterdir() if p.is_file()}
    for pattern in SHEET_NAMES:
        if (found := names.get(pattern.format(cls).casefold())) is not None:
            return found
    return None


def _read_sheet(path: Path, rel: str, source: str, log: ProblemLog) -> pd.DataFrame | None:
    """A metadata sheet as strings with a 1-based ``_row``; None (logged) when unusable."""
    if not path.is_file():
        log.add(source, rel, None, "unreadable-metadata", "skipped", "metadata sheet not found")
        return None
    return read_workbook(path, rel, source, log, REQUIRED)
