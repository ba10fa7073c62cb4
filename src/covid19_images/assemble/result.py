"""What an assembly is given and gives back, and how a build fails.

:func:`~covid19_images.assemble.build.build` ingests and selects the records of a recipe, then
hands an :class:`AssemblyJob` to :func:`~covid19_images.assemble.xray.assemble_xray` or
:func:`~covid19_images.assemble.ct.assemble_ct`; either gives back a :class:`BuildResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from covid19_images.errors import Covid19ImagesError
from covid19_images.fetch import Located
from covid19_images.problems import ProblemLog
from covid19_images.process.executor import Executor
from covid19_images.process.image import MAX_PIXELS

if TYPE_CHECKING:
    from covid19_images.assemble.recipe import Recipe
    from covid19_images.dedup.clusters import DedupResult
    from covid19_images.fetch.ensure import SourcesReport


class BuildError(Covid19ImagesError):
    """A build cannot start or finish (no sources present, a lock that does not match)."""


@dataclass
class BuildResult:
    """What a build made."""

    path: Path
    manifest: pd.DataFrame
    problems: ProblemLog
    sources_used: dict[str, Located]
    """Source id → where its files were (path and origin)."""
    sources_missing: list[str] = field(default_factory=list)
    dedup: DedupResult | None = None
    up_to_date: bool = False
    """True when the folder was already built from the same inputs and nothing was redone."""
    fetch: SourcesReport | None = None
    """Sources downloaded for this build, downloads that failed, sources left to a person."""
    naive: bool = False
    """A naive build (``build --naive``): split by image at random, every copy kept."""


@dataclass
class AssemblyJob:
    """What an assembly (X-ray or CT) needs from the build that ingested and selected its
    records."""

    base: Path
    """The data root (raw downloads, the processed cache, the salt)."""
    final: Path
    """The dataset folder to write, ``<out>/<recipe name>``."""
    used: dict[str, Located]
    missing: list[str]
    size: int
    seed: int
    executor: Executor
    log: ProblemLog
    dicom: bool
    state: str
    """The inputs fingerprint, saved in the folder for the next up-to-date check."""
    locked: dict[str, Any] | None
    """The lock being rebuilt, if any."""
    max_pixels: int = MAX_PIXELS
    progress: bool = False
    """Show a progress bar for every long step (on stderr)."""
    naive: bool = False
    """Keep every copy and split by image at random (:mod:`~covid19_images.assemble.naive`)."""


def nothing_passes(recipe: Recipe, log: ProblemLog) -> str:
    """The message of a build where no image passes the recipe: the commonest reasons."""
    frame = log.frame()
    reasons = frame[frame["action"].isin(["excluded", "skipped"])]["detail"].value_counts()
    top = "; ".join(f"{n} x {why}" for why, n in reasons.head(4).items())
    return f"no image passes recipe {recipe.name}" + (
        f" (most common reasons: {top})" if top else ""
    )


def nothing_to_segment(result: BuildResult) -> str | None:
    """Why a CT segmentation build holds no image/mask pair, and how to get one; None for a
    build that holds some, or of another kind.

    The sources of CT volumes with masks that the recipe reads (catalog: modality ``ct``, task
    ``segmentation``, a count of studies; MedSeg's 2-D slices are not volumes) are named: those
    absent with how to get them, and those present whose study volumes are absent (MosMedData's
    mirror has the masks without the studies).

    Example:
        >>> result = build("ct-lesion-seg", mirror="sources", fetch=False)  # doctest: +SKIP
        >>> print(nothing_to_segment(result))  # doctest: +SKIP
        ct-lesion-seg holds no CT volume with a lesion mask: nothing to train on. ...
    """
    import json

    from covid19_images.catalog.registry import load_catalog
    from covid19_images.fetch.ensure import manual_line

    if not result.manifest.empty:
        return None
    try:
        recipe = json.loads((result.path / "lock.json").read_text(encoding="utf-8"))["recipe"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if recipe.get("task") != "segmentation" or "CT" not in (recipe.get("modality") or []):
        return None
    read = set(result.sources_used) | set(result.sources_missing)
    entries = [
        e
        for e in load_catalog().filter(modality="ct", task="segmentation")
        if e.id in read and any(c.studies for c in e.counts)
    ]

    def how(entry: Any) -> str:
        if entry.access == "auto":
            return f"`covid19-images fetch {entry.id}`"
        return f"{manual_line(entry)}, then `covid19-images fetch {entry.id} --from DIR`"

    absent = [e for e in entries if e.id in result.sources_missing]
    problems = result.problems.frame()
    parts = []
    auto = [e.id for e in absent if e.access == "auto"]
    if auto:
        parts.append(
            f"{', '.join(auto)} {'is' if len(auto) == 1 else 'are'} not present "
            f"(`covid19-images fetch {' '.join(auto)}` downloads them)"
        )
    parts += [f"{e.id} is not present ({how(e)})" for e in absent if e.access != "auto"]
    for entry in entries:
        if entry.id not in result.sources_used:
            continue
        rows = problems[(problems["source"] == entry.id) & (problems["kind"] == "missing-study")]
        if rows.empty:
            continue
        masked = int(rows["detail"].str.contains("mask").sum())
        have = f"has {masked} lesion masks but not their" if masked else "is present without its"
        parts.append(f"{entry.id} {have} study volumes ({len(rows)} absent; {how(entry)})")
    return (
        f"{recipe.get('name')} holds no CT volume with a lesion mask: nothing to train on. "
        + (f"Of the sources of CT volumes with masks, {'; '.join(parts)}. " if parts else "")
        + "problems.csv says why each file was left out."
    )
