"""Covid-19 Image Dataset (Kaggle, Pranav Raikokte): 3-way classification, COVID-19 / Viral
Pneumonia / Normal.

A small folder-per-class chest X-ray set (317 images upstream) with no metadata at all::

    Covid19-dataset/{train,test}/{Covid,Normal,Viral Pneumonia}/<name>.{jpeg,jpg,png}

The label is the class folder (``Viral Pneumonia`` has a space; kept as it is in ``finding_raw``);
``train``/``test`` is upstream's own split (not grouped by patient). There are no patient ids
(``patient_id`` stays None) and no provenance per image, although many ``Covid`` images are
re-encoded copies of Figure 1 and ieee8023 images (``COVID-000NN`` names; catalog ``overlaps``):
the deduplication stage, not this adapter, finds them. One name can occur in several class
folders (``train/Normal/063.jpeg`` and ``train/Viral Pneumonia/063.jpeg``): records are keyed by
their whole path. No image is tagged ``paediatric``: the catalog entry sources no age for the
``Normal`` and ``Viral Pneumonia`` images.

Licence: none could be sourced; the images keep their sources' terms (``license`` stays None).

Cite: Pranav Raikokte, Covid-19 Image Dataset (3 Way Classification - COVID-19, Viral Pneumonia,
Normal), Kaggle, https://www.kaggle.com/pranavraikokte/covid19-image-dataset.

Example:
    >>> from covid19_images.sources import ingest
    >>> result = ingest("covid19-image-dataset", mirror="../shared/sources")  # doctest: +SKIP
    >>> len(result.records), result.problems.summary()  # doctest: +SKIP
    (36, 'no problems')
"""

from __future__ import annotations

from typing import ClassVar

from covid19_images.problems import ProblemLog
from covid19_images.records import Record
from covid19_images.sources.base import FolderAdapter
from covid19_images.sources.registry import register

TOP = "covid19-dataset"


@register
class Covid19ImageDataset(FolderAdapter):
    """Adapter for the Kaggle ``pranavraikokte/covid19-image-dataset`` folders."""

    source = "covid19-image-dataset"
    splits: ClassVar[dict[str, str]] = {"train": "train", "test": "test"}

    def describe(self, record: Record, parts: tuple[str, ...], log: ProblemLog) -> bool:
        # Covid19-dataset/<split>/<class>/<file>; anything else is reported as an orphan.
        return len(parts) == 4 and parts[0].casefold() == TOP
