"""Age and sex against the label, from the manifest (every split, one row per image).

Per class: images, the share with a recorded age, median age and interquartile range, the share
of children (an age under 18, or the ``paediatric`` tag that the adapters give Zhang Lab
radiographs of children aged one to five, whose age upstream does not record), and the shares
female, male and of unknown sex. Across classes: Kruskal-Wallis for age, chi-square for sex
(scipy). And, per class against the rest, the AUROC of age alone and of being a child alone,
with patient-bootstrap intervals: where normals are children and COVID-19 cases adults, a
classifier can reach a high AUROC by recognising a child's chest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from covid19_images.evaluation.metrics import BootstrapCI
from covid19_images.loaders.packed import read_meta
from covid19_images.probe._data import auroc_ci, ci_dict, fmt, fmt_ci, json_dict, md_table

__all__ = ["Association", "ClassDemographics", "Demographics", "demographics"]

CHILD_AGE = 18
PAEDIATRIC_TAG = "paediatric"


@dataclass(frozen=True)
class ClassDemographics:
    """One class's images: counts, age and sex, and how well age alone finds the class."""

    n: int
    age_known: float
    """Share of the class's images with a recorded age."""
    age_median: float | None
    age_q1: float | None
    age_q3: float | None
    children: float | None
    """Share of children among the images whose childhood is known (age recorded or tagged
    ``paediatric``); None when none is."""
    children_known: int
    """Images whose childhood is known."""
    female: float
    male: float
    sex_unknown: float
    age_auroc: BootstrapCI | None
    """AUROC of the recorded age as a score for this class against the rest (images with an
    age; below 0.5: the class is younger)."""
    child_auroc: BootstrapCI | None
    """AUROC of being a child (0/1) for this class against the rest, over images whose
    childhood is known."""


@dataclass(frozen=True)
class Association:
    """A test of association between the label and a variable."""

    test: str
    statistic: float
    p_value: float
    dof: int | None
    classes: list[str]
    """The classes the test compared (those with data)."""


@dataclass(frozen=True)
class Demographics:
    """What :func:`demographics` found."""

    classes: dict[str, ClassDemographics]
    age_test: Association | None
    sex_test: Association | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (no NaN).

        Example:
            >>> demographics("datasets/xray-covid").to_dict()["classes"]["normal"]  # doctest: +SKIP
        """
        classes = {}
        for name, c in self.classes.items():
            row = dict(c.__dict__)
            row["age_auroc"] = ci_dict(c.age_auroc)
            row["child_auroc"] = ci_dict(c.child_auroc)
            classes[name] = row
        return json_dict(
            {
                "classes": classes,
                "age_test": None if self.age_test is None else self.age_test.__dict__,
                "sex_test": None if self.sex_test is None else self.sex_test.__dict__,
                "notes": self.notes,
            }
        )

    def to_markdown(self, level: int = 3) -> str:
        """A report section: the per-class table, the tests and a one-line reading.

        Example:
            >>> print(demographics("datasets/xray-covid").to_markdown())  # doctest: +SKIP
        """
        rows = []
        for name, c in self.classes.items():
            iqr = (
                f"{c.age_median:.0f} ({c.age_q1:.0f}-{c.age_q3:.0f})"
                if c.age_median is not None and c.age_q1 is not None and c.age_q3 is not None
                else "n/a"
            )
            rows.append(
                [
                    name,
                    str(c.n),
                    fmt(c.age_known, percent=True),
                    iqr,
                    fmt(c.children, percent=True) + f" of {c.children_known}",
                    f"{fmt(c.female, percent=True)} / {fmt(c.male, percent=True)} / "
                    f"{fmt(c.sex_unknown, percent=True)}",
                    fmt_ci(c.age_auroc),
                    fmt_ci(c.child_auroc),
                ]
            )
        lines = [
            "#" * level + " Age and sex",
            "",
            md_table(
                [
                    "class",
                    "images",
                    "age known",
                    "median age (IQR)",
                    "children",
                    "F / M / unknown",
                    "AUROC of age",
                    "AUROC of being a child",
                ],
                rows,
            ),
            "",
            "Children: an age under 18 or the `paediatric` tag, of the images where either is "
            "known. AUROC of age: the age as the score for the class against the rest (under "
            "0.5: the class is younger); 95% patient-bootstrap intervals.",
            "",
        ]
        for label, test in (("Age", self.age_test), ("Sex", self.sex_test)):
            if test is None:
                lines.append(f"- {label}: no test (fewer than two classes with data).")
            else:
                dof = f", {test.dof} degrees of freedom" if test.dof is not None else ""
                lines.append(
                    f"- {label}: {test.test}, statistic {test.statistic:.2f}{dof}, "
                    f"p = {test.p_value:.2g} ({', '.join(test.classes)})."
                )
        lines += [f"- {n}" for n in self.notes]
        lines += ["", self.verdict(), ""]
        return "\n".join(lines)

    def verdict(self) -> str:
        """One sentence: the class that age or childhood separates best, if any does.

        An AUROC under 0.5 is read the other way round (a younger age, being an adult).

        Example:
            >>> demographics("datasets/xray-covid").verdict()  # doctest: +SKIP
            'Age is a strong shortcut: being an adult alone separates covid19 from the rest ...'
        """
        best: tuple[float, str, str, BootstrapCI] | None = None
        for name, c in self.classes.items():
            for what, ci in (("age", c.age_auroc), ("child", c.child_auroc)):
                if ci is not None and (best is None or abs(ci.point - 0.5) > best[0]):
                    best = (abs(ci.point - 0.5), name, what, ci)
        if best is None:
            return "Age is too rarely recorded here to measure its link to the label."
        strength, name, what, ci = best
        if ci.point < 0.5:
            ci = BootstrapCI(1 - ci.point, 1 - ci.high, 1 - ci.low, ci.n, ci.skipped, ci.level)
            phrase = "a younger age" if what == "age" else "being an adult"
        else:
            phrase = "an older age" if what == "age" else "being a child"
        if strength >= 0.2:
            return (
                f"Age is a strong shortcut: {phrase} alone separates {name} from the rest with "
                f"an AUROC of {fmt_ci(ci)}."
            )
        return (
            f"Age is at most a weak shortcut here: {phrase} alone separates {name} from the "
            f"rest with an AUROC of {fmt_ci(ci)}."
        )


def _children(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per image: whether it is a child's, and whether that is known."""
    age = pd.to_numeric(frame["age"], errors="coerce")
    tagged = frame["tags"].map(
        lambda t: (
            t is not None
            and not (isinstance(t, float) and math.isnan(t))
            and PAEDIATRIC_TAG in list(t)
        )
    )
    tagged = tagged.fillna(False).astype(bool)
    known = age.notna() | tagged
    child = (age < CHILD_AGE).fillna(False) | tagged
    return child.astype(bool), known.astype(bool)


def _sex(frame: pd.DataFrame) -> pd.Series:
    sex = frame["sex"].astype("string").str.strip().str.upper().str[:1]
    return sex.where(sex.isin(["F", "M"]), other=pd.NA)


def demographics(
    folder: Path | str | None = None,
    *,
    manifest: pd.DataFrame | None = None,
    classes: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> Demographics:
    """Age and sex per class, their association with the label and the AUROC of age alone.

    Reads ``folder``'s manifest (or takes ``manifest``: columns ``uid``, ``patient_id``,
    ``class``, ``age``, ``sex``, ``tags``). Every split counts, one row per image; the
    quantiles are pandas' (linear interpolation). Kruskal-Wallis compares the ages of the
    classes that have at least one; chi-square (:func:`scipy.stats.chi2_contingency`) compares
    female and male counts of the classes with a known sex. Intervals: patient bootstrap with
    ``n_boot`` resamples.

    Example:
        >>> m = pd.DataFrame({"uid": list("abcdef"), "patient_id": list("pqrstu"),
        ...     "class": ["normal"] * 3 + ["covid19"] * 3, "age": [3, 5, 40, 60, 70, 80],
        ...     "sex": ["F", "M", None, "M", "M", "F"], "tags": [[]] * 6})
        >>> d = demographics(manifest=m, n_boot=50)
        >>> d.classes["normal"].children, d.classes["covid19"].age_median
        (0.6666666666666666, 70.0)
        >>> d.classes["covid19"].age_auroc.point
        1.0
    """
    if manifest is None:
        if folder is None:
            raise ValueError("give a dataset folder or a manifest")
        folder = Path(folder)
        manifest = pd.read_parquet(folder / "manifest.parquet")
        if classes is None:
            classes = [str(c) for c in read_meta(folder)["classes"]]
    frame = manifest.copy()
    for column in ("patient_id", "age", "sex", "tags"):
        if column not in frame:
            frame[column] = None
    if "uid" not in frame:
        frame["uid"] = [str(i) for i in range(len(frame))]
    frame = frame[frame["class"].notna()].reset_index(drop=True)
    if classes is None:
        classes = sorted(str(c) for c in frame["class"].unique())
    frame["age"] = pd.to_numeric(frame["age"], errors="coerce")
    frame["child"], frame["child_known"] = _children(frame)
    frame["sex1"] = _sex(frame)
    frame["patient_id"] = frame["patient_id"].astype("string")
    with_age = frame[frame["age"].notna()].reset_index(drop=True)
    known_child = (
        frame[frame["child_known"]]
        .reset_index(drop=True)
        .assign(child_score=lambda f: f["child"].astype(float))
    )
    per_class: dict[str, ClassDemographics] = {}
    for name in classes:
        part = frame[frame["class"] == name]
        n = len(part)
        ages = part["age"].dropna()
        known = part[part["child_known"]]
        sex = part["sex1"]
        per_class[name] = ClassDemographics(
            n=n,
            age_known=len(ages) / n if n else math.nan,
            age_median=float(ages.median()) if len(ages) else None,
            age_q1=float(ages.quantile(0.25)) if len(ages) else None,
            age_q3=float(ages.quantile(0.75)) if len(ages) else None,
            children=float(known["child"].mean()) if len(known) else None,
            children_known=len(known),
            female=float((sex == "F").sum() / n) if n else math.nan,
            male=float((sex == "M").sum() / n) if n else math.nan,
            sex_unknown=float(sex.isna().sum() / n) if n else math.nan,
            age_auroc=auroc_ci(with_age, name, "age", n=n_boot, seed=seed),
            child_auroc=auroc_ci(known_child, name, "child_score", n=n_boot, seed=seed),
        )
    notes = []
    if len(frame) and frame["age"].notna().mean() < 0.5:
        notes.append(
            f"Age is recorded for {frame['age'].notna().mean():.0%} of the images only: "
            "the age figures describe those."
        )
    return Demographics(per_class, _age_test(frame, classes), _sex_test(frame, classes), notes)


def _age_test(frame: pd.DataFrame, classes: list[str]) -> Association | None:
    groups = {c: frame.loc[frame["class"] == c, "age"].dropna().to_numpy() for c in classes}
    groups = {c: g for c, g in groups.items() if len(g)}
    if len(groups) < 2 or len(np.unique(np.concatenate(list(groups.values())))) < 2:
        return None
    result = stats.kruskal(*groups.values())
    return Association(
        "Kruskal-Wallis",
        float(result.statistic),
        float(result.pvalue),
        len(groups) - 1,
        list(groups),
    )


def _sex_test(frame: pd.DataFrame, classes: list[str]) -> Association | None:
    known = frame[frame["sex1"].notna()]
    table = pd.crosstab(known["class"], known["sex1"]).reindex(
        index=[c for c in classes if c in set(known["class"])], columns=["F", "M"], fill_value=0
    )
    table = table[table.sum(axis=1) > 0]
    if len(table) < 2 or (table.sum(axis=0) == 0).any():
        return None
    result = stats.chi2_contingency(table.to_numpy())
    return Association(
        "chi-square",
        float(result.statistic),
        float(result.pvalue),
        int(result.dof),
        [str(c) for c in table.index],
    )
