"""All probes at once, their report section, and writing them beside a dataset or a run."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from covid19_images.atomic import replacing, write_text
from covid19_images.explanation.energy import load_masks
from covid19_images.probe._data import fmt, fmt_ci, json_dict, read_manifest
from covid19_images.probe.demographics import Demographics, demographics
from covid19_images.probe.lungs import (
    LUNG_MASK_SOURCES,
    LungsRemoved,
    MaskSpec,
    Predict,
    draw_lung_region,
    lungs_removed,
)
from covid19_images.probe.source import SourceProbe, source_predictability
from covid19_images.probe.weak import WeakModel, weak_model

__all__ = [
    "DATASHEET_SECTION",
    "ProbeResult",
    "probe",
    "replace_section",
    "write_files",
    "write_probe",
]

PROBE_JSON: Final = "probe.json"
PROBE_MD: Final = "probe.md"
PROBE_FIGURE: Final = "probe_region.png"
DATASHEET: Final = "datasheet.md"
DATASHEET_SECTION: Final = "Shortcut probes"
PROBE_VERSION: Final = 1


@dataclass(frozen=True)
class ProbeResult:
    """The four shortcut measurements of one dataset (and, with a model, of one run)."""

    dataset: str
    source: SourceProbe
    demographics: Demographics
    weak: WeakModel
    lungs: LungsRemoved | None = None
    """Only with a model (``predict``)."""
    run: str | None = None
    """A name for the model ``lungs`` scored (e.g. its run folder)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (no NaN), as ``probe.json`` holds it.

        Example:
            >>> result = probe("datasets/xray-covid")  # doctest: +SKIP
            >>> json.dumps(result.to_dict(), allow_nan=False)  # doctest: +SKIP
        """
        return json_dict(
            {
                "version": PROBE_VERSION,
                "dataset": self.dataset,
                "run": self.run,
                "source_predictability": self.source.to_dict(),
                "demographics": self.demographics.to_dict(),
                "weak_model": self.weak.to_dict(),
                "lungs_removed": None if self.lungs is None else self.lungs.to_dict(),
            }
        )

    def summary(self) -> list[str]:
        """One sentence per probe.

        Example:
            >>> probe("datasets/xray-covid").summary()[0]  # doctest: +SKIP
            'Source: predicted from the pixels with a balanced accuracy of 0.57 [0.43, 0.68] ...'
        """
        lines = []
        if self.source.ran:
            lines.append(
                f"Source: predicted from the pixels with a balanced accuracy of "
                f"{fmt_ci(self.source.balanced_accuracy)} (chance {fmt(self.source.chance)}); "
                f"the source alone gives the label a balanced accuracy of "
                f"{fmt_ci(self.source.label_from_source)}."
            )
        else:
            lines.append("Source: not measured (" + " ".join(self.source.notes) + ")")
        lines.append(self.demographics.verdict())
        lines.append(self.weak.verdict(None if self.lungs is None else self.lungs.auroc))
        if self.lungs is not None:
            lines.append(self.lungs.verdict())
        return lines

    def to_markdown(self, level: int = 2, figure: str | None = None) -> str:
        """The report section ``Shortcut probes`` (heading at ``level``), its probes one level
        down; ``figure`` is the path of the lung-region figure to show, if any.

        Example:
            >>> print(probe("datasets/xray-covid").to_markdown())  # doctest: +SKIP
        """
        sub = level + 1
        who = f" and the model of {self.run}" if self.run else ""
        parts = [
            "#" * level + f" {DATASHEET_SECTION}",
            "",
            f"Shortcuts in {self.dataset}{who}: what a model could learn instead of the "
            "disease. Written by `covid19-images probe`.",
            "",
            *(f"- {line}" for line in self.summary()),
            "",
            self.source.to_markdown(sub),
            self.demographics.to_markdown(sub),
            self.weak.to_markdown(sub, beside=None if self.lungs is None else self.lungs.auroc),
        ]
        if self.lungs is not None:
            parts.append(self.lungs.to_markdown(sub, figure=figure))
        return "\n".join(parts).rstrip() + "\n"


def probe(
    folder: Path | str,
    predict: Predict | None = None,
    out: Path | str | None = None,
    *,
    run: str | None = None,
    classes: list[str] | None = None,
    masks: MaskSpec = "auto",
    mirror: Path | str | None = None,
    root: Path | str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> ProbeResult:
    """Run every probe on the dataset ``folder``; with ``predict`` (a model's probabilities for
    uint8 images N x S x S, columns ``classes``, by default the dataset's) also
    :func:`~covid19_images.probe.lungs.lungs_removed`. With ``out`` (a run folder, say),
    ``probe.json``, ``probe.md`` and the lung-region figure are written there
    (:func:`write_files`); the dataset folder is written by :func:`write_probe`.

    Example:
        >>> result = probe("datasets/xray-covid")  # doctest: +SKIP
        >>> write_probe("datasets/xray-covid", result)  # doctest: +SKIP
    """
    folder = Path(folder)
    lungs = (
        lungs_removed(
            predict,
            folder,
            classes=classes,
            masks=masks,
            mirror=mirror,
            root=root,
            n_boot=n_boot,
            seed=seed,
        )
        if predict is not None
        else None
    )
    result = ProbeResult(
        dataset=folder.name,
        source=source_predictability(folder, n_boot=n_boot, seed=seed),
        demographics=demographics(folder, n_boot=n_boot, seed=seed),
        weak=weak_model(folder, n_boot=n_boot, seed=seed),
        lungs=lungs,
        run=run,
    )
    if out is not None:
        write_files(Path(out), result, folder, mirror=mirror, root=root)
    return result


def _write_text(path: Path, text: str) -> None:
    write_text(path, text)  # whole or not at all, keeping the mode of the file it replaces


def write_files(
    out: Path,
    result: ProbeResult,
    folder: Path | None = None,
    *,
    mirror: Path | str | None = None,
    root: Path | str | None = None,
) -> list[Path]:
    """Write ``probe.json``, ``probe.md`` (and, when ``result`` has the lungs-removed probe and
    ``folder`` is its dataset, ``probe_region.png``) into ``out``; returns the paths written.

    Example:
        >>> dataset = Path("datasets/xray-covid")  # doctest: +SKIP
        >>> write_files(Path("runs/resnet18"), probe(dataset), dataset)  # doctest: +SKIP
    """
    out.mkdir(parents=True, exist_ok=True)
    written = []
    figure = None
    if result.lungs is not None and folder is not None:
        with replacing(out / PROBE_FIGURE) as tmp:
            real = _real_masks(folder, mirror, root)
            draw_lung_region(tmp, folder, result.lungs.split, masks=real)
        written.append(out / PROBE_FIGURE)
        figure = PROBE_FIGURE
    text = json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"
    _write_text(out / PROBE_JSON, text)
    _write_text(out / PROBE_MD, result.to_markdown(level=2, figure=figure))
    return [out / PROBE_JSON, out / PROBE_MD, *written]


def _real_masks(
    folder: Path, mirror: Path | str | None, root: Path | str | None, limit: int = 500
) -> dict[str, np.ndarray]:
    """Up to ``limit`` of the dataset's real lung masks at 64 px, by uid, for the figure."""
    manifest = read_manifest(folder)
    has = manifest["source"].isin(list(LUNG_MASK_SOURCES)) & manifest["mask_paths"].map(
        lambda paths: paths is not None and len(paths) > 0
    )
    rows = manifest[has].head(limit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the probe's notes already count unreadable masks
        masks = load_masks(rows, 64, root=root, mirror=mirror, on_error="warn")
    return {str(u): m for u, m in zip(rows["uid"], masks, strict=True) if m is not None}


_HEADING = re.compile(r"^## (?!#)")


def replace_section(text: str, section: str) -> str:
    """``text`` (Markdown) with its ``## Shortcut probes`` section replaced by ``section``, or
    ``section`` appended when there is none; a section runs to the next ``## `` heading.

    Example:
        >>> doc = "# D\\n\\n## A\\n\\na\\n\\n## Shortcut probes\\n\\nold\\n\\n## B\\n\\nb\\n"
        >>> print(replace_section(doc, "## Shortcut probes\\n\\nnew\\n"))
        # D
        <BLANKLINE>
        ## A
        <BLANKLINE>
        a
        <BLANKLINE>
        ## Shortcut probes
        <BLANKLINE>
        new
        <BLANKLINE>
        ## B
        <BLANKLINE>
        b
        <BLANKLINE>
    """
    lines = text.splitlines()
    heading = f"## {DATASHEET_SECTION}"
    body = section.rstrip("\n").splitlines()
    if heading in lines:
        start = lines.index(heading)
        end = next(
            (i for i in range(start + 1, len(lines)) if _HEADING.match(lines[i])), len(lines)
        )
        tail = lines[end:]
        new = [*lines[:start], *body, *([""] if tail else []), *tail]
    else:
        while lines and not lines[-1].strip():
            lines.pop()
        new = [*lines, "", *body] if lines else body
    return "\n".join(new) + "\n"


def write_probe(
    folder: Path | str,
    result: ProbeResult,
    *,
    mirror: Path | str | None = None,
    root: Path | str | None = None,
) -> list[Path]:
    """Write ``probe.json`` and ``probe.md`` into the dataset ``folder`` and add (or replace)
    the ``Shortcut probes`` section of its ``datasheet.md``; every file is written to a
    temporary name and renamed into place. Returns the paths written.

    No checksum of the dataset covers these files: ``lock.json`` holds the manifest's digest,
    ``.build-state.json`` a digest of the build's inputs and ``audit.json`` the images, so
    none changes. A rebuild of the dataset replaces the folder, and with it the probe's files
    and section: the probe then has to run again on the new data.

    Example:
        >>> write_probe("datasets/xray-covid", probe("datasets/xray-covid"))  # doctest: +SKIP
    """
    folder = Path(folder)
    written = write_files(folder, result, folder, mirror=mirror, root=root)
    sheet = folder / DATASHEET
    old = sheet.read_text(encoding="utf-8") if sheet.is_file() else ""
    figure = PROBE_FIGURE if result.lungs is not None else None
    _write_text(sheet, replace_section(old, result.to_markdown(level=2, figure=figure)))
    return [*written, sheet]
