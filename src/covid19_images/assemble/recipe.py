"""Recipes: which sources, which images, which classes, how to split — as data files.

A recipe lives in ``covid19_images/recipes/<name>.toml`` (or any TOML file a user points at) and
is validated against :class:`Recipe` when it loads.
"""

from __future__ import annotations

import difflib
import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from covid19_images.dedup.near import (
    DEFAULT_MAX_HAMMING,
    DEFAULT_MIN_ALIGNED,
    DEFAULT_MIN_CORRELATION,
    DEFAULT_MIN_DETAIL,
)
from covid19_images.errors import Covid19ImagesError
from covid19_images.records import LABELS, VIEWS


class RecipeError(Covid19ImagesError):
    """A recipe is unknown or invalid."""

    exit_code = 2


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitSpec(_Model):
    """Split fractions and the seed."""

    train: float = Field(0.7, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.2, ge=0, le=1)
    seed: int = 0

    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


class DedupSpec(_Model):
    """Near-duplicate thresholds (see ``docs/deduplication.md`` for how they were chosen)."""

    max_hamming: int = Field(DEFAULT_MAX_HAMMING, ge=0, le=32)
    min_correlation: float = Field(DEFAULT_MIN_CORRELATION, ge=0, le=1)
    min_detail: float = Field(DEFAULT_MIN_DETAIL, ge=0, le=1)
    min_aligned: float = Field(DEFAULT_MIN_ALIGNED, ge=0, le=1)


class TargetSpec(_Model):
    """A regression target: the record attribute it is read from and its valid range."""

    attribute: str
    min: float
    max: float
    description: str = ""


class Recipe(_Model):
    """What an assembled dataset holds.

    Example:
        >>> recipe = load_recipe("xray-covid")
        >>> sorted(recipe.classes), recipe.views
        (['covid19', 'normal', 'pneumonia'], ['PA', 'AP', 'AP_SUPINE'])
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str
    modality: list[Literal["XR", "CR", "DX", "CT"]] = ["XR", "CR", "DX"]
    sources: list[str] | Literal["all"] = "all"
    exclude_sources: list[str] = []
    views: list[str] = ["PA", "AP", "AP_SUPINE"]
    keep_unknown_view: bool = True
    adult_only: bool = False
    include_augmented: bool = False
    classes: dict[str, list[str]]
    """Dataset class → harmonised labels that make it (a class merge is several labels)."""
    membership: Literal["covidx"] | None = None
    """Take split and class from an upstream membership list instead (COVIDx)."""
    split: SplitSpec = SplitSpec()
    dedup: DedupSpec = DedupSpec()
    task: Literal["classification", "segmentation", "detection", "regression"] = "classification"
    """``segmentation`` keeps only images (CT: volumes) with a usable mask and writes
    image/label pairs; ``detection`` (X-ray) images with boxes; ``regression`` (X-ray) images
    with every target. ``classes`` still stratify the split."""
    window: Literal["lung", "mediastinum"] = "lung"
    """CT: the HU window of the uint8 slices."""
    mask_labels: Literal["lesion", "harmonised"] = "lesion"
    """CT segmentation: one lesion label (GGO, consolidation, infection), or the whole map."""
    nnunet_dataset: str | None = Field(None, pattern=r"^Dataset\d{3}_[A-Za-z0-9_]+$")
    """CT segmentation: also write an nnU-Net raw dataset folder of this name."""
    mask_label: str = Field("lung", pattern=r"^[a-z0-9_]+$")
    """X-ray segmentation and detection: the name of label 1 of the binary masks."""
    box_labels: list[str] = []
    """Detection: the box labels kept, in order (COCO category ids 1, 2, ...)."""
    targets: dict[str, TargetSpec] = {}
    """Regression: target name → the record attribute and its valid range, in order."""
    annotation_notes: list[str] = []
    """Lines for the datasheet on where the annotations come from and how they were made."""

    @model_validator(mode="after")
    def _task_needs(self) -> Recipe:
        if self.task == "detection" and not self.box_labels:
            raise ValueError("a detection recipe names its box_labels")
        if self.task == "regression" and not self.targets:
            raise ValueError("a regression recipe names its targets")
        if self.task in ("detection", "regression") and "CT" in self.modality:
            raise ValueError(f"task {self.task} is for X-ray recipes")
        for name, spec in self.targets.items():
            if spec.min >= spec.max:
                raise ValueError(f"target {name}: min {spec.min} is not below max {spec.max}")
        return self

    @field_validator("views")
    @classmethod
    def _views(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in VIEWS]
        if unknown:
            raise ValueError(f"unknown views {unknown}; known: {list(VIEWS)}")
        return value

    @field_validator("classes")
    @classmethod
    def _classes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        seen: dict[str, str] = {}
        for name, labels in value.items():
            for label in labels:
                if label not in LABELS:
                    raise ValueError(f"class {name}: unknown label {label!r}")
                if label in seen:
                    raise ValueError(f"label {label!r} is in classes {seen[label]} and {name}")
                seen[label] = name
        return value

    def class_of(self, label: str) -> str | None:
        """The dataset class of a harmonised label, or None when the recipe leaves it out."""
        for name, labels in self.classes.items():
            if label in labels:
                return name
        return None


def recipe_names() -> list[str]:
    """Recipes shipped with the package."""
    folder = resources.files("covid19_images.recipes")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A packaged recipe by name, or a recipe TOML file by path.

    Raises:
        RecipeError: Unknown name (with the known ones) or invalid file (with the fields).
    """
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        text = path.read_text(encoding="utf-8")
    else:
        resource = resources.files("covid19_images.recipes") / f"{name_or_path}.toml"
        if not resource.is_file():
            close = difflib.get_close_matches(str(name_or_path), recipe_names(), n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise RecipeError(
                f"unknown recipe {str(name_or_path)!r}{hint}; known: {', '.join(recipe_names())} "
                "(or a path to a recipe .toml)"
            )
        text = resource.read_text(encoding="utf-8")
    try:
        return Recipe.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"invalid recipe {name_or_path}: {exc}") from None
    except ValidationError as exc:
        raise RecipeError(f"invalid recipe {name_or_path}: {_said(exc)}") from None


def with_options(
    recipe: Recipe,
    *,
    views: list[str] | None = None,
    adult_only: bool | None = None,
    classes: dict[str, list[str]] | None = None,
) -> Recipe:
    """The recipe with command-line options applied (validated again).

    Example:
        >>> r = with_options(load_recipe("xray-covid"), views=["PA"], adult_only=True,
        ...                  classes={"covid19": ["covid19"], "other": ["normal"]})
        >>> r.views, r.adult_only, sorted(r.classes)
        (['PA'], True, ['covid19', 'other'])
    """
    update: dict[str, object] = {}
    if views:
        update["views"] = views
    if adult_only is not None:
        update["adult_only"] = adult_only
    if classes:
        update["classes"] = classes
    if not update:
        return recipe
    try:
        return Recipe.model_validate({**recipe.model_dump(), **update})
    except ValidationError as exc:
        raise RecipeError(f"invalid options for recipe {recipe.name}: {_said(exc)}") from None


def _said(exc: ValidationError) -> str:
    """A validation error in one line: each field and what is wrong with it, no URLs."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'recipe'}: {error['msg']}"
        for error in exc.errors()
    )


def parse_merge(options: list[str]) -> dict[str, list[str]]:
    """``["pneumonia=pneumonia_viral,pneumonia_bacterial", ...]`` → classes.

    Example:
        >>> parse_merge(["covid19=covid19", "other=normal,pneumonia_viral"])
        {'covid19': ['covid19'], 'other': ['normal', 'pneumonia_viral']}
    """
    classes: dict[str, list[str]] = {}
    for option in options:
        name, sep, labels = option.partition("=")
        if not sep or not name.strip() or not labels.strip():
            raise RecipeError(f"--class {option!r}: write NAME=LABEL[,LABEL...]")
        classes[name.strip()] = [x.strip() for x in labels.split(",") if x.strip()]
    return classes
