"""MedSeg COVID-19 CT segmentation datasets nr. 1 (100 slices) and nr. 2 (9 volumes).

Both come from medicalsegmentation.com/covid19 (figshare records 13521488 and 13521509) as NIfTI
files with radiologist masks of the same label map: 1 ground-glass, 2 consolidation, 3 pleural
effusion (:data:`~covid19_images.process.ct.masks.MASK_MAPS` ``"medseg"``). Every image is of a
COVID-19 patient, as the collection's page says (no per-image metadata): ``finding_raw =
"COVID-19"``, ``label = "covid19"``, ``label_origin = "metadata"``. Upstream gives no patient
ids, so ``patient_id`` is None and every record is tagged ``patient-unknown``.

``medseg-slices`` (dataset nr. 1)::

    tr_im.nii.gz                  512 x 512 x 100: 100 unrelated axial slices (> 40 patients)
    tr_mask.nii.gz                their masks, slice k for slice k
    val_im.nii.gz                 10 test slices, no masks
    tr_lungmasks_updated.nii.gz   optional lung masks of the 100 slices

Each file is a stack of 2-D cases, not a volume: one record per slice ``k`` of ``tr_im`` (split
``train``) and of ``val_im`` (split ``test``), ``path_raw`` the stack, ``uid`` from
``"<stack>#<k>"``, ``attributes["slice_index"] = k``; the masks are the stacks' files (the
pipeline reads slice ``k`` of each). The number of slices is read from the NIfTI header here. The
slices were cut from JPG images on SIRM case pages and mapped back towards Hounsfield units from
air and fat reference regions (MedSeg's blog post): ``attributes["hu"] = True`` with tag
``approximate-hu``, values are only roughly HU.

``medseg-volumes`` (dataset nr. 2)::

    rp_im/1.nii.gz … 9.nii.gz        axial volumes rebuilt from Radiopaedia cases
    rp_msk/<same name>               infection masks ("medseg" map)
    rp_lung_msk/<same name>          lung masks ("medseg-lung" map)

One record per ``rp_im`` file; the volumes are not in Hounsfield units (``attributes["hu"] =
False``, tag ``not-hu``). The lung masks are credited to the ``lungmask`` tool, whose labels are
1 = right lung and 2 = left lung; the ``medseg-lung`` map follows it (MedSeg states no values).

Problems: a mask with no image is ``missing-study`` (skipped); an image without its mask is kept
without it (``missing-file``, kept); a mask stack whose slice count or slice size differs from its
image stack is ``mask-mismatch`` (kept without that mask); a NIfTI whose header cannot be read is
``unreadable-file``; any other NIfTI file is an ``orphan-file``.

Licence: CC0 1.0 for nr. 1 (figshare); none stated for nr. 2. Cite: MedSeg Covid Dataset 1 / 2,
figshare 2021, doi:10.6084/m9.figshare.13521488.v2 and doi:10.6084/m9.figshare.13521509.v2.

Example:
    >>> from covid19_images.sources import ingest
    >>> result = ingest("medseg-slices", path="medseg-slices/")  # doctest: +SKIP
    >>> len(result.records), result.records[0].attributes["slice_index"]  # doctest: +SKIP
    (110, 0)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import nibabel as nib

from covid19_images.problems import ProblemLog
from covid19_images.records import Record, make_uid
from covid19_images.sources.base import Adapter, FileIndex, MaskFolders
from covid19_images.sources.registry import register

NIFTI_SUFFIXES: Final = (".gz", ".nii")
FINDING: Final = "COVID-19"
"""Every MedSeg image is of a COVID-19 patient (the collection's page)."""


def is_nifti(rel: str) -> bool:
    """True for a ``.nii`` or ``.nii.gz`` path.

    Example:
        >>> is_nifti("rp_im/1.nii.gz"), is_nifti("a.tar.gz")
        (True, False)
    """
    name = rel.casefold()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def nifti_shape(path: Path) -> tuple[int, ...] | str:
    """The shape in a NIfTI header (data are not read), or why it cannot be read.

    Example:
        >>> nifti_shape(Path("/nonexistent.nii.gz"))[:16]
        'cannot read the '
    """
    try:
        img: Any = nib.load(path)
        return tuple(int(n) for n in img.shape)
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
        return f"cannot read the NIfTI header: {exc}"


def _covid_record(source: str, path_raw: str, *, uid: str = "") -> Record:
    return Record(
        source=source,
        path_raw=path_raw,
        uid=uid,
        modality="CT",
        view="AXIAL",
        finding_raw=FINDING,
        label_origin="metadata",
        tags=["patient-unknown"],
        attributes={"format": "nifti"},
    )


@dataclass(frozen=True)
class _Stack:
    image: str
    split: str
    masks: tuple[tuple[str, str], ...]
    """(mask file, MASK_MAPS id) of the stack, in the order they are applied."""


@register
class MedsegSlices(Adapter):
    """Adapter for MedSeg dataset nr. 1: one record per slice of ``tr_im`` and ``val_im``."""

    source = "medseg-slices"
    STACKS: Final = (
        _Stack(
            "tr_im.nii.gz",
            "train",
            (("tr_lungmasks_updated.nii.gz", "medseg-lung"), ("tr_mask.nii.gz", "medseg")),
        ),
        _Stack("val_im.nii.gz", "test", ()),
    )
    REQUIRED_MASK: Final = "tr_mask.nii.gz"

    def records(self, root: Path, log: ProblemLog) -> list[Record]:
        index = FileIndex.scan(root, suffixes=NIFTI_SUFFIXES)
        license_id = self.entry.license.spdx if self.entry.license else None
        records: list[Record] = []
        for stack in self.STACKS:
            image = index.find(stack.image)
            present = [(index.find(m), name) for m, name in stack.masks]
            for mask, _ in present:
                if mask is not None:
                    index.claim(mask)
            if image is None:
                for mask, _ in present:
                    if mask is not None:
                        log.add(
                            self.source,
                            mask,
                            None,
                            "missing-study",
                            "skipped",
                            f"{stack.image}, the slices this mask belongs to, is not there",
                        )
                continue
            index.claim(image)
            shape = nifti_shape(root / image)
            if isinstance(shape, str) or len(shape) != 3:
                kind = "unreadable-file" if isinstance(shape, str) else "bad-value"
                detail = shape if isinstance(shape, str) else f"not a 3-D stack: shape {shape}"
                log.add(self.source, image, None, kind, "skipped", detail)
                continue
            masks: list[tuple[str, str]] = []
            for (mask, map_id), (expected, _) in zip(present, stack.masks, strict=True):
                if mask is None:
                    if expected == self.REQUIRED_MASK:
                        log.add(
                            self.source,
                            expected,
                            None,
                            "missing-file",
                            "kept",
                            f"the slices of {image} are kept without their lesion masks",
                        )
                    continue
                mask_shape = nifti_shape(root / mask)
                if mask_shape != shape:
                    log.add(
                        self.source,
                        mask,
                        None,
                        "unreadable-file" if isinstance(mask_shape, str) else "mask-mismatch",
                        "kept",
                        (mask_shape if isinstance(mask_shape, str) else f"shape {mask_shape}")
                        + f", the image stack {shape}: the slices are kept without this mask",
                    )
                    continue
                masks.append((mask, map_id))
            for k in range(shape[2]):
                record = _covid_record(
                    self.source, image, uid=make_uid(self.source, f"{image}#{k}")
                )
                record.upstream_split = stack.split
                record.license = license_id
                record.mask_paths = [m for m, _ in masks]
                record.attributes.update(
                    slice_index=k, hu=True, mask_maps=[name for _, name in masks]
                )
                record.tags.append("approximate-hu")
                self.label(record, log, image)
                records.append(record)
        index.report_orphans(self.source, log, "not a file of MedSeg dataset nr. 1")
        return records


@register
class MedsegVolumes(Adapter):
    """Adapter for MedSeg dataset nr. 2: one record per ``rp_im`` volume."""

    source = "medseg-volumes"
    IMAGES: Final = "rp_im"
    MASKS: Final = (("rp_lung_msk", "medseg-lung"), ("rp_msk", "medseg"))
    """Mask folders and their MASK_MAPS ids, in the order they are applied."""

    def records(self, root: Path, log: ProblemLog) -> list[Record]:
        index = FileIndex.scan(root, suffixes=NIFTI_SUFFIXES)
        license_id = self.entry.license.spdx if self.entry.license else None
        images = niftis_in(index, self.IMAGES)
        masks = {folder: niftis_in(index, folder) for folder, _ in self.MASKS}
        pairing = MaskFolders(self.MASKS, masks, frozenset(f for f, _ in self.MASKS))
        records: list[Record] = []
        for key, image in sorted(images.items(), key=lambda item: _natural(item[0])):
            index.claim(image)
            record = _covid_record(self.source, image)
            record.license = license_id
            record.study_id = nifti_stem(Path(image).name)
            record.attributes["hu"] = False
            record.tags.append("not-hu")
            pairing.attach(record, key, index, log)
            self.label(record, log, image)
            records.append(record)
        pairing.report_unpaired(self.source, images, self.IMAGES, index, log)
        index.report_orphans(self.source, log, "not a file of MedSeg dataset nr. 2")
        return records


def niftis_in(index: FileIndex, folder: str) -> dict[str, str]:
    """Case-folded file name → path of the NIfTI files directly in ``folder`` of ``index``.

    Example:
        >>> index = FileIndex(Path("."), {"rp_im/1.nii.gz": "rp_im/1.nii.gz"})
        >>> niftis_in(index, "RP_IM"), niftis_in(index, "rp_msk")
        ({'1.nii.gz': 'rp_im/1.nii.gz'}, {})
    """
    found: dict[str, str] = {}
    for rel in index.files.values():
        parent, _, name = rel.rpartition("/")
        if parent.casefold() == folder.casefold() and is_nifti(name):
            found[name.casefold()] = rel
    return found


def nifti_stem(name: str) -> str:
    """A NIfTI file name without ``.nii.gz`` or ``.nii``.

    Example:
        >>> nifti_stem("coronacases_001.nii.gz"), nifti_stem("1.NII"), nifti_stem("a.txt")
        ('coronacases_001', '1', 'a.txt')
    """
    for suffix in (".nii.gz", ".nii"):
        if name.casefold().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _natural(name: str) -> tuple[int, str]:
    stem = nifti_stem(name)
    return (int(stem), name) if stem.isdigit() else (1 << 30, name)
