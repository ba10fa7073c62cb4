"""COVID-19 Detection X-Ray Dataset (Darshan Deshpande, Kaggle; GitHub copy by coyotespike).

A folder-per-class chest X-ray set with four classes (``COVID-19``, ``Normal``,
``ViralPneumonia``, ``BacterialPneumonia``) and no metadata: the label is the class folder, file
names are renumbered (``0.jpeg``, ``1.jpeg``, ...), so there are **no patient ids** (``patient_id``
stays None). The class folders sit one level down, inside a folder with the repository's own
name (a layout without that level, as a Kaggle download may have, is read too)::

    covid19-detection-xray-dataset/{NonAugmentedTrain,TrainData,ValData}/<class>/<n>.jpeg
    covid19-detection-xray-dataset/TrainData/OversampledAugmentedCOVID-19/COVID-19/_<i>_<r>.jpeg

Upstream split: ``NonAugmentedTrain`` and ``TrainData`` → ``train``, ``ValData`` → ``val``
(``attributes["upstream_folder"]`` keeps which folder).

Augmented copies: the copier's README says the author "then augmented the dataset". Everything in
``TrainData/`` is augmented: besides ``OversampledAugmentedCOVID-19/``, ``TrainData/COVID-19``
holds 60 files named ``_<index>_<random>.jpeg`` (the naming of Keras' ImageDataGenerator
``save_to_dir``, the same as in ``OversampledAugmentedCOVID-19``); none is a byte or pixel copy of a
``NonAugmentedTrain/COVID-19`` image (best 32 x 32 grey correlation 0.86, no higher than two
distinct films reach), and they show rotation, shear, zoom and the edge streaks of nearest-pixel
fill. An image under ``OversampledAugmentedCOVID-19/`` or with such a name gets the tag
``augmented`` and one ``augmented-copy`` problem (action ``excluded``): it stays in the manifest
and recipes leave it out by default.

Paediatric: the ``Normal``, ``ViralPneumonia`` and ``BacterialPneumonia`` images are renamed
copies of Zhang Lab radiographs of children aged one to five (catalog entry, caveats and
``overlaps``: README of the coyotespike copy and a pixel comparison), so they carry the tag
``paediatric``; the ``COVID-19`` images are copies of (adult) ieee8023 images. Never combine this
source with ieee8023 or zhanglab without deduplicating.

Licence: none for the Kaggle original could be sourced; the GitHub copy's Unlicense is the
copier's, the images keep their sources' terms (``license`` stays None).

Cite: Darshan Deshpande, COVID-19 Detection X-Ray Dataset, Kaggle,
https://www.kaggle.com/darshan1504/covid19-detection-xray-dataset, and the source collections
(Cohen et al., arXiv:2006.11988; Kermany et al., Cell 2018).

Example:
    >>> from covid19_images.sources import ingest
    >>> result = ingest("darshan", mirror="../shared/sources")  # doctest: +SKIP
    >>> len(result.records), result.problems.summary()  # doctest: +SKIP
    (504, 'no input problems; also 120 left out by the recipe (augmented-copy 120)')
"""

from __future__ import annotations

import re

from covid19_images.problems import ProblemLog
from covid19_images.records import Record
from covid19_images.sources.base import FolderAdapter
from covid19_images.sources.registry import register

NESTED = "covid19-detection-xray-dataset"
SPLIT_FOLDERS = {"nonaugmentedtrain": "train", "traindata": "train", "valdata": "val"}
OVERSAMPLED = "oversampledaugmentedcovid-19"
PAEDIATRIC_CLASSES = frozenset({"normal", "viralpneumonia", "bacterialpneumonia"})
AUGMENTED_NAME = re.compile(r"^_\d+_\d+\.[A-Za-z]+$")
"""``_<index>_<random>.jpeg``: the file names Keras' ImageDataGenerator gives what it writes."""


@register
class Covid19DetectionXrayDataset(FolderAdapter):
    """Adapter for the Darshan Deshpande folder dataset (coyotespike GitHub copy)."""

    source = "covid19-detection-xray-dataset"

    def describe(self, record: Record, parts: tuple[str, ...], log: ProblemLog) -> bool:
        rest = parts[1:] if parts[0].casefold() == NESTED else parts
        if len(rest) == 4 and rest[1].casefold() == OVERSAMPLED:
            folder = f"{rest[0]}/{rest[1]}"
        elif len(rest) == 3:
            folder = rest[0]
        else:
            return False  # not <split>/<class>/<file>: reported as an orphan file
        split = SPLIT_FOLDERS.get(rest[0].casefold())
        if split is None or (len(rest) == 4 and split != "train"):
            return False
        record.upstream_split = split
        record.attributes["upstream_folder"] = folder
        if record.finding_raw and record.finding_raw.casefold() in PAEDIATRIC_CLASSES:
            record.tags.append("paediatric")
        if len(rest) == 4 or AUGMENTED_NAME.match(parts[-1]):
            record.tags.append("augmented")
            record.problems.append("augmented-copy")
            log.add(
                self.source,
                record.path_raw,
                None,
                "augmented-copy",
                "excluded",
                f"an augmented image made by upstream (in {folder}, named {parts[-1]}); "
                "recipes leave it out by default",
            )
        return True
