"""``build RECIPE --naive``: the usual notebook recipe, deliberately leaky, for comparison only.

A naive build reads, filters and processes the same images as the recipe's honest build, then
does what most published notebooks do: it keeps every copy (exact and near duplicates found by
the copy search, and the augmented copies upstream made) and splits **by image at random**,
stratified by class, with the recipe's fractions and seed, ignoring patients. CT slices of one
volume are split one by one. It writes ``<out>/<recipe>-naive/`` with the same files as an
honest build (manifest, packed arrays, datasheet, lock, audit), so every loader reads it, and
marks it everywhere: ``lock.json`` and ``packed.json`` carry ``"naive": true``, the datasheet
opens with a bold warning, and its audit records the leakage it finds.

It exists so that one model can be trained on the honest dataset and on the naive one, and the
difference in the metrics shows how much the naive recipe inflates them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from covid19_images.assemble.recipe import Recipe
from covid19_images.audit.report import AuditReport
from covid19_images.problems import Problem, ProblemLog
from covid19_images.records import Record

SUFFIX: Final = "-naive"
"""The naive folder of recipe ``xray-covid`` is ``xray-covid-naive``."""

KEPT_KINDS: Final = ("duplicate", "augmented-copy")
"""The exclusions that make an honest build honest, and that a naive build keeps."""

_KEPT = "kept by the naive build (the honest build leaves it out): "

SPLITS: Final = ("train", "val", "test")


def folder_name(recipe: str, naive: bool) -> str:
    """The dataset folder of a recipe: ``<recipe>`` or ``<recipe>-naive``.

    Example:
        >>> folder_name("xray-covid", True), folder_name("xray-covid", False)
        ('xray-covid-naive', 'xray-covid')
    """
    return f"{recipe}{SUFFIX}" if naive else recipe


def random_split(labels: Sequence[str], fractions: Mapping[str, float], seed: int) -> list[str]:
    """A split per image, at random, stratified by class: the notebook's ``train_test_split``.

    Within each class the images are shuffled (seeded) and cut by the fractions (largest
    remainder rounding, so the counts add up); nothing else (patient, copy) is looked at.

    Example:
        >>> split = random_split(["a"] * 10 + ["b"] * 10, {"train": 0.7, "val": 0.1,
        ...                      "test": 0.2}, seed=0)
        >>> [split[:10].count(s) for s in ("train", "val", "test")]
        [7, 1, 2]
        >>> split == random_split(["a"] * 10 + ["b"] * 10, {"train": 0.7, "val": 0.1,
        ...                       "test": 0.2}, seed=0)
        True
    """
    names = [n for n in SPLITS if fractions.get(n, 0) > 0]
    weights = np.array([fractions[n] for n in names], dtype=np.float64)
    weights /= weights.sum()
    rng = np.random.default_rng(seed)
    out = [""] * len(labels)
    for label in sorted(set(labels)):
        where = [i for i, x in enumerate(labels) if x == label]
        order = rng.permutation(len(where))
        exact = weights * len(where)
        counts = np.floor(exact).astype(int)
        for k in np.argsort(-(exact - counts), kind="stable")[: len(where) - counts.sum()]:
            counts[k] += 1
        bounds = np.cumsum(counts)
        for rank, j in enumerate(order):
            out[where[j]] = names[int(np.searchsorted(bounds, rank, side="right"))]
    return out


def fractions_of(recipe: Recipe, kept: Sequence[Record], upstream: bool) -> dict[str, float]:
    """The split fractions of a naive build: the recipe's, or for a membership recipe (whose
    honest build keeps upstream's splits) the share of each upstream split among the images.

    Example:
        >>> from covid19_images.assemble.recipe import load_recipe
        >>> fractions_of(load_recipe("xray-covid"), [], False)
        {'train': 0.7, 'val': 0.1, 'test': 0.2}
    """
    if not upstream:
        return recipe.split.fractions()
    counts = Counter(r.upstream_split or "train" for r in kept)
    total = max(sum(counts.values()), 1)
    return {s: counts.get(s, 0) / total for s in SPLITS}


@dataclass
class NaiveSummary:
    """What a naive build kept that the honest build leaves out, and how it split."""

    fractions: dict[str, float]
    seed: int
    unit: str = "image"
    """What is split at random: ``image`` (X-ray), ``sample`` (CT volume or 2-D slice), or
    ``slice`` (CT classification: every slice on its own)."""
    kept: dict[str, dict[str, int]] = field(default_factory=dict)
    """Source → kind (``duplicate``, ``augmented-copy``) → images kept."""
    images: int = 0
    """Images kept that the honest build leaves out (an image can be a copy and augmented)."""
    both: int = 0
    """Of those, images that are both a found copy and an augmented copy."""
    clusters: int = 0
    pairs: int = 0
    exact_pairs: int = 0
    pairs_across: int = 0
    """Pairs of copies (found by the build's copy search) that the random split put apart."""

    def total(self, kind: str | None = None) -> int:
        """Images kept of one kind (or of both).

        Example:
            >>> NaiveSummary({}, 0, kept={"a": {"duplicate": 2, "augmented-copy": 3}}).total()
            5
        """
        return sum(n for by in self.kept.values() for k, n in by.items() if kind in (None, k))

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data (``lock.json``'s ``naive_build``)."""
        return {
            "split_by": self.unit,
            "fractions": self.fractions,
            "seed": self.seed,
            "kept": self.kept,
            "images_kept": self.images,
            "clusters": self.clusters,
            "pairs": self.pairs,
            "exact_pairs": self.exact_pairs,
            "pairs_across_splits": self.pairs_across,
        }


def keep_augmented(log: ProblemLog, selected: Sequence[Record]) -> ProblemLog:
    """The log with each selected record's ``augmented-copy`` row turned from ``excluded``
    into ``kept`` (the naive build keeps upstream's augmented copies).

    Example:
        >>> log = ProblemLog()
        >>> log.add("s", "a.png", None, "augmented-copy", "excluded", "flipped")
        >>> [p.action for p in keep_augmented(log, [Record(source="s", path_raw="a.png")])]
        ['kept']
    """
    chosen = {(r.source, r.path_raw) for r in selected}
    out = ProblemLog()
    for p in log:
        if p.kind == "augmented-copy" and p.action == "excluded" and (p.source, p.file) in chosen:
            out.add(p.source, p.file, p.row, p.kind, "kept", _KEPT + p.detail)
        else:
            out.add(p.source, p.file, p.row, p.kind, p.action, p.detail)
    return out


def keep_copies(scratch: ProblemLog, log: ProblemLog, records: Sequence[Record]) -> None:
    """Copy the copy search's ``duplicate`` rows (made in ``scratch``) into ``log`` as
    ``kept``, and note the problem on each record; every other row is copied as it is."""
    by_file = {(r.source, r.path_raw): r for r in records}
    for p in scratch:
        if p.kind == "duplicate" and p.action == "excluded":
            log.add(p.source, p.file, p.row, p.kind, "kept", _KEPT + p.detail)
            record = by_file.get((p.source, p.file))
            if record is not None and "duplicate" not in record.problems:
                record.problems.append("duplicate")
        else:
            log.add(p.source, p.file, p.row, p.kind, p.action, p.detail)


def summarize(
    log: ProblemLog,
    pairs: pd.DataFrame,
    clusters: int,
    fractions: dict[str, float],
    seed: int,
    unit: str,
    split_of: Mapping[str, str],
) -> NaiveSummary:
    """What the naive build kept (from its problem rows), and how it split (``split_of``:
    uid → split of every image)."""
    kept: dict[str, Counter[str]] = {}
    kinds: dict[tuple[str, str], set[str]] = {}
    for p in log:
        if is_naive_choice(p):
            kept.setdefault(p.source, Counter())[p.kind] += 1
            kinds.setdefault((p.source, p.file), set()).add(p.kind)
    across = 0
    if len(pairs):
        across = sum(
            split_of.get(str(a)) != split_of.get(str(b))
            for a, b in zip(pairs["uid_a"], pairs["uid_b"], strict=True)
        )
    return NaiveSummary(
        fractions=fractions,
        seed=seed,
        unit=unit,
        kept={s: dict(sorted(c.items())) for s, c in sorted(kept.items())},
        images=len(kinds),
        both=sum(len(k) > 1 for k in kinds.values()),
        clusters=clusters,
        pairs=len(pairs),
        exact_pairs=int(pairs["exact"].sum()) if len(pairs) and "exact" in pairs else 0,
        pairs_across=int(across),
    )


def is_naive_choice(problem: Problem) -> bool:
    """Whether a problem row is a copy the naive build kept on purpose (not an input problem).

    Example:
        >>> is_naive_choice(Problem("s", "a.png", None, "duplicate", "kept", _KEPT + "copy"))
        True
    """
    return problem.kind in KEPT_KINDS and problem.action == "kept" and _KEPT in problem.detail


def mark_packed(folder: Path) -> None:
    """Add ``"naive": true`` to the folder's ``packed.json``, for a trainer to warn on."""
    path = folder / "packed.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["naive"] = True
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def split_slices(slices: pd.DataFrame, fractions: Mapping[str, float], seed: int) -> pd.DataFrame:
    """Slices of CT volumes, each given a split at random (stratified by class) and its path
    moved into that split's folder; 2-D images keep theirs (already split at random).

    Example:
        >>> rows = pd.DataFrame({"uid": ["v"] * 4, "slice": [0, 1, 2, 3], "class": ["c"] * 4,
        ...                      "split": ["train"] * 4,
        ...                      "path": [f"train/c/v_{k:04d}.png" for k in range(4)]})
        >>> out = split_slices(rows, {"train": 0.5, "test": 0.5}, seed=0)
        >>> sorted(out["split"]), all(p.startswith(s) for s, p in zip(out["split"], out["path"]))
        (['test', 'test', 'train', 'train'], True)
    """
    out = slices.copy()
    volume = out["slice"].notna().to_numpy()
    if not volume.any():
        return out
    labels = out.loc[volume, "class"].astype(str).tolist()
    chosen = random_split(labels, fractions, seed)
    paths = out.loc[volume, "path"].astype(str).tolist()
    out.loc[volume, "split"] = chosen
    out.loc[volume, "path"] = [
        f"{s}/{p.split('/', 1)[1]}" for s, p in zip(chosen, paths, strict=True)
    ]
    return out


def datasheet_banner(recipe: Recipe) -> list[str]:
    """The datasheet's first lines: bold, before anything else.

    Example:
        >>> from covid19_images.assemble.recipe import load_recipe
        >>> datasheet_banner(load_recipe("xray-covid"))[0]
        '# Datasheet: xray-covid-naive (NAIVE: deliberately leaky)'
    """
    return [
        f"# Datasheet: {folder_name(recipe.name, True)} (NAIVE: deliberately leaky)",
        "",
        f"> **NAIVE DATASET: deliberately leaky, for comparison only. Never report results "
        f"from it.** It holds the images of recipe `{recipe.name}` split by image at random, "
        "with every copy kept, as most published notebooks do: the same patient and copies of "
        f"one film are on both sides of the split. Train on `{recipe.name}/` (built without "
        "`--naive`) for any result; this folder only shows how much the naive recipe inflates "
        "the metrics.",
    ]


def datasheet_section(summary: NaiveSummary, audit: AuditReport) -> list[str]:
    """The datasheet's section on what the naive build did differently, and what it caused."""
    fractions = ", ".join(f"{s} {f:.0%}" for s, f in summary.fractions.items() if f > 0)
    unit = {
        "image": "image by image",
        "sample": "sample by sample (a CT volume or 2-D slice each)",
        "slice": "slice by slice (every slice of a CT volume, and every 2-D slice, on its own)",
    }[summary.unit]
    lines = [
        "## Why this dataset is naive",
        "",
        f"- **Split {unit}, at random**, stratified by class ({fractions}; seed "
        f"{summary.seed}). Patients and copies were ignored.",
        f"- **Every copy kept**: {_n(summary.images, 'image')} that the honest build leaves "
        f"out: {_n(summary.total('duplicate'), 'copy', 'copies')} of another image here (the "
        f"copy search found {_n(summary.clusters, 'cluster')}, {_n(summary.pairs, 'pair')}, "
        f"{summary.exact_pairs} pixel-identical; the split put {summary.pairs_across} apart) "
        f"and {_n(summary.total('augmented-copy'), 'augmented copy', 'augmented copies')} "
        f"upstream made ({summary.both} both). Each is a `kept` row of `problems.csv` (kinds "
        "`duplicate`, `augmented-copy`).",
        f"- **Leakage, by design**: the audit of this folder found "
        f"{_n(len(audit.shared_patients), 'patient')} in more than one split and "
        f"{_n(len(audit.cross_split_duplicates), 'copy', 'copies')} across splits "
        "(`audit.json`).",
        '- `lock.json` and `packed.json` say `"naive": true`.',
        "",
    ]
    if summary.kept:
        table = pd.DataFrame(summary.kept).T.fillna(0).astype(int)
        table = table.reindex(columns=[k for k in KEPT_KINDS if k in table])
        table.index.name = "source"
        head = "| " + " | ".join(["source", *map(str, table.columns)]) + " |"
        rule = "|" + "---|" * (len(table.columns) + 1)
        rows = [
            "| " + " | ".join([str(i), *(str(v) for v in row)]) + " |"
            for i, row in zip(table.index, table.to_numpy().tolist(), strict=True)
        ]
        lines += ["Copies kept per source:", "", head, rule, *rows, ""]
    return lines


def _n(count: int, one: str, many: str | None = None) -> str:
    """``1 pair``, ``2 pairs``.

    Example:
        >>> _n(1, "copy", "copies"), _n(2, "copy", "copies"), _n(0, "pair")
        ('1 copy', '2 copies', '0 pairs')
    """
    return f"{count} {one if count == 1 else (many or one + 's')}"


def warning(folder: Path) -> str:
    """The one line ``build --naive`` prints: the leakage is by design, and how much the audit
    (``audit.json``) and the build's own copy search (``lock.json``) found across splits.

    Example:
        >>> warning(Path("datasets/xray-covid-naive"))  # doctest: +SKIP
        'naive dataset: leakage by design (the audit found 20 patients in several splits and 13 copies across splits; the copy search put 25 pairs of copies apart); for comparison only, never for reporting results'
    """  # noqa: E501
    audit = _json(folder / "audit.json")
    build = _json(folder / "lock.json").get("naive_build")
    patients = len(audit.get("shared_patients") or [])
    copies = len(audit.get("cross_split_duplicates") or [])
    apart = build.get("pairs_across_splits") if isinstance(build, dict) else None
    search = (
        f"; the copy search put {_n(apart, 'pair')} of copies apart"
        if isinstance(apart, int)
        else ""
    )
    return (
        f"naive dataset: leakage by design (the audit found {_n(patients, 'patient')} in "
        f"several splits and {_n(copies, 'copy', 'copies')} across splits{search}); for "
        "comparison only, never for reporting results"
    )


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
