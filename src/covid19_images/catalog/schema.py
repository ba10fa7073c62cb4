"""Typed schema of a catalog entry.

Every source the project knows is described by one TOML file in ``catalog/entries/``. The file is
validated against :class:`SourceEntry` when the catalog loads, so a typo in a field name, an
unknown modality or a malformed checksum fails at once with the file and field named, instead of
surfacing later as a wrong download.

Facts in an entry must be sourced: every count names where the number comes from, and a field that
cannot be sourced stays empty (``None`` or an empty list) rather than holding a guess.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Modality = Literal["xray", "ct"]
Task = Literal["classification", "segmentation", "localization"]
Access = Literal["auto", "manual", "registration"]
DownloadKind = Literal["github", "zenodo", "figshare", "url"]

_SLUG = r"^[a-z0-9][a-z0-9._-]*$"
_CHECKSUM = re.compile(r"^(sha256:[0-9a-f]{64}|sha1:[0-9a-f]{40}|md5:[0-9a-f]{32})$")

Slug = Annotated[str, Field(pattern=_SLUG, min_length=2, max_length=64)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Count(_Model):
    """A reported count, always with where the number comes from.

    Example:
        >>> Count(what="COVID-19 CT images", images=349, patients=216,
        ...       reference="UCSD-AI4H/COVID-CT README").patients
        216
    """

    what: str = Field(description="What is counted, e.g. 'COVID-19 images' or 'whole collection'.")
    images: int | None = Field(default=None, ge=0)
    patients: int | None = Field(default=None, ge=0)
    studies: int | None = Field(default=None, ge=0, description="CT studies or volumes.")
    reference: str = Field(min_length=3, description="Where the number comes from.")


class License(_Model):
    """The licence under which upstream distributes the data.

    ``name`` stays ``None`` where upstream states none; ``per_item`` marks collections (such as
    ieee8023) that give a licence per image, in which case ``notes`` says where to find it.
    """

    name: str | None = None
    spdx: str | None = None
    url: str | None = None
    per_item: bool = False
    notes: str | None = None

    def label(self) -> str:
        """A short label for tables.

        Example:
            >>> License(spdx="CC-BY-NC-ND-3.0").label(), License(per_item=True).label()
            ('CC-BY-NC-ND-3.0', 'per image')
        """
        if self.spdx:
            return self.spdx
        if self.name:
            return self.name
        return "per image" if self.per_item else "not stated"


class Citation(_Model):
    """How to cite the source."""

    text: str | None = None
    doi: str | None = None
    url: str | None = None


class Download(_Model):
    """One file to download for an ``auto`` source.

    ``kind="github"`` archives are fetched at a pinned ``commit`` (40 hex digits); the archive's
    single top-level folder is stripped so the raw folder has upstream's own layout. ``checksum``
    is ``"sha256:<hex>"`` (or ``md5:``/``sha1:`` where that is all upstream publishes); where it is
    unknown it stays empty and the first verified download records one in the fetch receipt.

    Example:
        >>> Download(kind="github", repository="agchung/Figure1-COVID-chestxray-dataset",
        ...          commit="95bb569e" + "0" * 32).resolved_url()  # doctest: +ELLIPSIS
        'https://github.com/agchung/Figure1-COVID-chestxray-dataset/archive/95bb569e....tar.gz'
    """

    kind: DownloadKind
    url: str | None = None
    repository: str | None = Field(default=None, pattern=r"^[\w.-]+/[\w.-]+$")
    commit: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")
    record: str | None = Field(default=None, description="Zenodo record or figshare article id.")
    filename: str | None = Field(
        default=None, description="Name to store the download under; defaults to the URL's name."
    )
    checksum: str | None = None
    size: int | None = Field(default=None, ge=0, description="Bytes, where upstream states it.")
    extract: bool = Field(default=True, description="Unpack .zip/.tar* archives after download.")
    strip_top_level: bool | None = Field(
        default=None,
        description="Drop the archive's single top-level folder (default: true for github).",
    )
    subdir: str | None = Field(
        default=None, description="Folder inside the raw tree to extract this file into."
    )
    unpack: list[str] = Field(
        default_factory=list,
        description="Archives inside the extracted tree to unpack in place (upstream ships zips).",
    )

    @field_validator("checksum")
    @classmethod
    def _checksum_format(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        value = value.lower()
        if not _CHECKSUM.match(value):
            raise ValueError("checksum must look like 'sha256:<64 hex>' (or md5:/sha1:)")
        return value

    @model_validator(mode="after")
    def _has_location(self) -> Download:
        if self.kind == "github":
            if not (self.repository and self.commit):
                raise ValueError("a github download needs 'repository' and a 40-digit 'commit'")
        elif not self.url:
            raise ValueError(f"a {self.kind} download needs 'url'")
        return self

    def resolved_url(self) -> str:
        """The URL to request."""
        if self.url:
            return self.url
        return f"https://github.com/{self.repository}/archive/{self.commit}.tar.gz"

    def resolved_filename(self) -> str:
        """The file name the download is stored under."""
        if self.filename:
            return self.filename
        if self.kind == "github" and not self.url:
            return f"{(self.repository or '').split('/')[-1]}-{self.commit}.tar.gz"
        tail = self.resolved_url().split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return tail or "download"

    def strips_top_level(self) -> bool:
        """Whether the archive's single top-level folder is dropped on extraction."""
        if self.strip_top_level is not None:
            return self.strip_top_level
        return self.kind == "github"


class Manual(_Model):
    """How a person gets the files of a ``manual`` or ``registration`` source."""

    url: str | None = Field(default=None, description="Where to go to download or register.")
    steps: list[str] = Field(default_factory=list)


class Layout(_Model):
    """The folder a user should end up with, and what ``fetch --from`` checks.

    ``required`` entries are paths relative to the source folder: ``"metadata.csv"`` must be a
    file, ``"images/"`` (trailing slash) a folder, and a pattern with ``*`` must match at least one
    path. ``tree`` shows the expected folder to a person.
    """

    required: list[str] = Field(default_factory=list)
    optional: list[str] = Field(default_factory=list)
    tree: str | None = None
    notes: list[str] = Field(default_factory=list)


class Overlap(_Model):
    """A known overlap with another catalog source (shared images or patients)."""

    source: Slug
    note: str


class SourceEntry(_Model):
    """One public COVID-19 imaging source.

    Example:
        >>> from covid19_images import get_source
        >>> entry = get_source("mosmeddata")
        >>> entry.modality, entry.access, entry.license.spdx
        (['ct'], 'manual', 'CC-BY-NC-ND-3.0')
    """

    id: Slug
    name: str
    also_known_as: list[str] = Field(
        default_factory=list, description="Other names, including the field survey's."
    )
    aliases: list[Slug] = Field(
        default_factory=list,
        description="Other ids accepted on the command line; also mirror folder names.",
    )
    summary: str
    modality: list[Modality] = Field(min_length=1)
    tasks: list[Task] = Field(min_length=1)
    labels: list[str] = Field(
        default_factory=list, description="Upstream label vocabulary, verbatim."
    )
    counts: list[Count] = Field(default_factory=list)
    license: License = Field(default_factory=License)
    citation: Citation = Field(default_factory=Citation)
    homepage: str | None = None
    access: Access
    version: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Version of the raw files (a commit, record version or release).",
    )
    subset_of: Slug | None = Field(
        default=None, description="The entry whose files hold this one (e.g. the CT rows)."
    )
    download: list[Download] = Field(default_factory=list)
    manual: Manual | None = None
    layout: Layout = Field(default_factory=Layout)
    overlaps: list[Overlap] = Field(default_factory=list)
    caveats: list[str] = Field(default_factory=list)
    references: list[str] = Field(
        default_factory=list, description="Where the facts in this entry come from."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SourceEntry:
        if self.access == "auto" and not self.download and not self.subset_of:
            raise ValueError("an 'auto' source needs at least one [[download]]")
        if self.access != "auto" and not self.subset_of and not (self.manual and self.manual.steps):
            raise ValueError(f"a '{self.access}' source needs [manual] steps")
        if self.download and not self.version:
            raise ValueError(
                "a source with downloads needs a 'version' for raw/<source>/<version>/"
            )
        if self.id in self.aliases:
            raise ValueError("an alias repeats the id")
        return self

    @property
    def names(self) -> list[str]:
        """Every id and name this entry answers to."""
        return [self.id, *self.aliases, self.name, *self.also_known_as]
