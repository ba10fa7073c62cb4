"""Age and sex per class equal pandas, scipy and scikit-learn on a fixed manifest."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from covid19_images.probe import demographics

CLASSES = ["covid19", "normal", "pneumonia"]


@pytest.fixture(scope="module")
def manifest() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = []
    for i in range(150):
        name = CLASSES[i % 3]
        age: float | None = {
            "covid19": float(rng.integers(35, 90)),
            "normal": float(rng.integers(1, 60)),
            "pneumonia": float(rng.integers(10, 80)),
        }[name]
        tags: list[str] = []
        if i % 7 == 0:
            age = None
        if name == "normal" and i % 5 == 0:  # children with no recorded age
            age, tags = None, ["paediatric"]
        rows.append(
            {
                "uid": f"u{i}",
                "patient_id": f"p{i // 2}" if i % 4 else None,
                "class": name,
                "age": age,
                "sex": ["F", "M", None, "f"][int(rng.integers(0, 4))],
                "tags": tags,
            }
        )
    return pd.DataFrame(rows)


def test_per_class_figures_equal_pandas(manifest: pd.DataFrame) -> None:
    result = demographics(manifest=manifest, classes=CLASSES, n_boot=50)
    for name in CLASSES:
        part = manifest[manifest["class"] == name]
        ages = part["age"].dropna()
        tagged = part["tags"].map(lambda t: "paediatric" in t)
        known = part["age"].notna() | tagged
        child = (part["age"] < 18) | tagged
        sex = part["sex"].str.upper()
        got = result.classes[name]
        assert got.n == len(part)
        assert got.age_known == pytest.approx(len(ages) / len(part))
        assert got.age_median == pytest.approx(ages.median())
        assert got.age_q1 == pytest.approx(ages.quantile(0.25))
        assert got.age_q3 == pytest.approx(ages.quantile(0.75))
        assert got.children_known == int(known.sum())
        assert got.children == pytest.approx(child[known].mean())
        assert got.female == pytest.approx((sex == "F").mean())
        assert got.male == pytest.approx((sex == "M").mean())
        assert got.female + got.male + got.sex_unknown == pytest.approx(1.0)


def test_tests_and_aurocs_equal_scipy_and_scikit_learn(manifest: pd.DataFrame) -> None:
    result = demographics(manifest=manifest, classes=CLASSES, n_boot=100)
    groups = [manifest.loc[manifest["class"] == c, "age"].dropna() for c in CLASSES]
    kruskal = stats.kruskal(*groups)
    assert result.age_test is not None
    assert result.age_test.statistic == pytest.approx(kruskal.statistic)
    assert result.age_test.p_value == pytest.approx(kruskal.pvalue)
    sex = manifest["sex"].str.upper()
    table = pd.crosstab(manifest["class"], sex[sex.isin(["F", "M"])])
    chi2 = stats.chi2_contingency(table.to_numpy())
    assert result.sex_test is not None
    assert result.sex_test.statistic == pytest.approx(chi2.statistic)
    assert result.sex_test.p_value == pytest.approx(chi2.pvalue)
    assert result.sex_test.dof == chi2.dof == 2
    aged = manifest[manifest["age"].notna()]
    tagged = manifest["tags"].map(lambda t: "paediatric" in t)
    known = manifest[manifest["age"].notna() | tagged]
    child = ((known["age"] < 18) | tagged[known.index]).astype(float)
    for name in CLASSES:
        got = result.classes[name]
        assert got.age_auroc is not None and got.child_auroc is not None
        assert got.age_auroc.point == pytest.approx(
            roc_auc_score(aged["class"] == name, aged["age"])
        )
        assert got.child_auroc.point == pytest.approx(roc_auc_score(known["class"] == name, child))
        assert got.age_auroc.low <= got.age_auroc.point <= got.age_auroc.high
    # the planted confound: normals are younger, covid19 older
    normal, covid = result.classes["normal"].age_auroc, result.classes["covid19"].age_auroc
    assert normal is not None and covid is not None
    assert normal.high < 0.35 and covid.low > 0.65
    assert "strong shortcut" in result.verdict()
    json.dumps(result.to_dict(), allow_nan=False)
    assert "Kruskal-Wallis" in result.to_markdown()


def test_no_age_and_one_sex_give_no_test() -> None:
    frame = pd.DataFrame(
        {"uid": ["a", "b", "c"], "class": ["x", "y", "y"], "age": [None] * 3, "sex": ["F"] * 3}
    )
    result = demographics(manifest=frame)
    assert result.age_test is None and result.sex_test is None
    assert result.classes["x"].age_auroc is None and result.classes["x"].age_median is None
    assert "too rarely recorded" in result.verdict()
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["classes"]["x"]["n"] == 1
