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
