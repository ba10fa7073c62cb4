"""``datasheet.md``: what is in an assembled dataset, where it came from, and what to beware of.

Written next to the data at the end of every build: counts per class x split x source, provenance
and licences of every source, the deduplication and problem summaries, the audit's confounding
warnings, the research-use notice, a chart of class balance per source (``class_balance.png``) and
a montage of samples (``samples.png``), both drawn with Pillow.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from covid19_images import RESEARCH_USE_NOTICE, __version__
from covid19_images.assemble.naive import NaiveSummary, datasheet_banner, datasheet_section
from covid19_images.assemble.recipe import Recipe
from covid19_images.audit.report import AuditReport
from covid19_images.catalog import load_catalog
from covid19_images.dedup.clusters import DedupResult
from covid19_images.fetch import Located
from covid19_images.problems import ProblemLog

_PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]


def _table(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join([str(frame.index.name or ""), *map(str, frame.columns)]) + " |"
    rule = "|" + "---|" * (len(frame.columns) + 1)
    rows = [
        "| " + " | ".join([str(i), *(str(v) for v in row)]) + " |"
        for i, row in zip(frame.index, frame.to_numpy().tolist(), strict=True)
    ]
    return "\n".join([head, rule, *rows])


def write_datasheet(
    folder: Path,
    recipe: Recipe,
    manifest: pd.DataFrame,
    log: ProblemLog,
    dedup: DedupResult,
    audit: AuditReport,
    used: dict[str, Located],
    missing: Sequence[str],
    *,
    montage: pd.DataFrame | None = None,
    extra: Sequence[str] = (),
    naive: NaiveSummary | None = None,
) -> None:
    """Write ``datasheet.md``, ``class_balance.png`` and ``samples.png`` into ``folder``.

    ``montage`` (uid, class, path of a PNG) picks the sample images when the manifest's paths
    are not images (CT volumes); ``extra`` lines go before the duplicates section. ``naive``
    (a naive build) puts the bold NAIVE warning first and says what was kept and split how.
    """
    catalog = load_catalog()
    by_split = manifest.groupby(["class", "split"]).size().unstack(fill_value=0)
    by_split = by_split.reindex(columns=[s for s in ("train", "val", "test") if s in by_split])
    by_split["total"] = by_split.sum(axis=1)
    by_source = manifest.groupby(["source", "class"]).size().unstack(fill_value=0)
    lines = [
        *(datasheet_banner(recipe) if naive is not None else [f"# Datasheet: {recipe.name}"]),
        "",
        f"> **{RESEARCH_USE_NOTICE}**",
        "",
        recipe.description,
        "",
        *(datasheet_section(naive, audit) if naive is not None else []),
        f"Built by covid19-images {__version__}. {len(manifest)} "
        f"{'samples (volumes or 2-D slices)' if 'level' in manifest else 'images'} of "
        f"{manifest['patient_id'].nunique()} known patients; "
        f"{int(manifest['patient_id'].isna().sum())} images have no patient id upstream "
        + (
            "(the split ignores patients)."
            if naive is not None
            else "(each is its own group in the split)."
        ),
        "",
        *(
            [
                "**No sample passed the recipe.** `problems.csv` says, for every row and file "
                "left out, why.",
                "",
            ]
            if manifest.empty
            else []
        ),
        "## Classes per split",
        "",
        _table(by_split),
        "",
        "## Classes per source",
        "",
        _table(by_source),
        "",
        "![class balance per source](class_balance.png)",
        "",
        "## Sources",
        "",
    ]
    for source, located in sorted(used.items()):
        entry = catalog.get(source)
        cite = entry.citation.text or entry.homepage or ""
        kept = int((manifest["source"] == source).sum())
        fetched = located.origin == "fetched" and entry.version
        version = f"version {entry.version}" if fetched else "files as found"
        lines.append(
            f"- **{entry.name}** (`{source}`): {kept} images in the dataset; {version} "
            f"({located.origin}); "
            f"licence: {entry.license.label()}. {cite}"
        )
    if missing:
        lines += ["", f"Not present, so not included: {', '.join(sorted(missing))}."]
    pairs = dedup.pairs
    if extra:
        lines += ["", *extra]
    lines += [
        "",
        "## Duplicates",
        "",
        f"{len(dedup.report.clusters)} clusters of copies found across and within sources "
        f"({len(pairs)} pairs, {int(pairs['exact'].sum()) if len(pairs) else 0} exact); "
        + ("every copy was kept (naive). " if naive is not None else "one copy of each was kept. ")
        + f"{len(dedup.rejected)} candidate pairs with close perceptual "
        "hashes were different films (rejected on pixels). See `duplicates.csv`.",
        "",
    ]
    if len(pairs):
        across = pairs.groupby(["source_a", "source_b"]).size().rename("pairs").to_frame()
        across.index = [f"{a} / {b}" for a, b in across.index]
        across.index.name = "sources"
        lines += [_table(across), ""]
    lines += [
        "## Audit",
        "",
        "```",
        audit.text(),
        "```",
        "",
        "## Warnings",
        "",
    ]
    lines += [f"- {w}" for w in audit.warnings] or ["- none"]
    counts = log.frame().groupby(["kind", "action"]).size()
    lines += [
        "",
        "## Problems",
        "",
        f"{log.summary()}. Every row is in `problems.csv` (source, file, row, kind, action).",
        "",
    ]
    if len(counts):
        frame = counts.rename("rows").to_frame()
        frame.index = [f"{k} ({a})" for k, a in frame.index]
        frame.index.name = "kind (action)"
        lines += [_table(frame), ""]
    lines += ["## Samples", "", "![samples](samples.png)", ""]
    (folder / "datasheet.md").write_text("\n".join(lines), encoding="utf-8")
    if len(by_source):
        _bar_chart(by_source, folder / "class_balance.png")
    samples = manifest if montage is None else montage
    pngs = samples[samples["path"].astype(str).str.endswith(".png")]
    if len(pngs):
        _montage(folder, pngs, folder / "samples.png")


def _bar_chart(by_source: pd.DataFrame, path: Path) -> None:
    """Stacked horizontal bars: one per source, one colour per class."""
    width, bar, pad, left = 720, 22, 8, 230
    classes = list(by_source.columns)
    height = pad * 3 + (bar + pad) * len(by_source) + 24
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    most = max(int(by_source.sum(axis=1).max()), 1)
    scale = (width - left - 60) / most
    for row, (source, counts) in enumerate(by_source.iterrows()):
        y = pad + row * (bar + pad)
        draw.text((6, y + 5), str(source)[:34], fill="black")
        x = left
        for k, name in enumerate(classes):
            w = int(counts[name] * scale)
            draw.rectangle([x, y, x + w, y + bar], fill=_PALETTE[k % len(_PALETTE)])
            x += w
        draw.text((x + 4, y + 5), str(int(counts.sum())), fill="black")
    x = 6
    for k, name in enumerate(classes):
        draw.rectangle([x, height - 20, x + 12, height - 8], fill=_PALETTE[k % len(_PALETTE)])
        draw.text((x + 16, height - 21), str(name), fill="black")
        x += 20 + 8 * len(str(name))
    img.save(path)


def _montage(folder: Path, manifest: pd.DataFrame, path: Path, per_class: int = 6) -> None:
    """A row of samples per class (the first images by uid, so the montage is reproducible)."""
    tile = 112
    classes = sorted(manifest["class"].unique())
    img = Image.new("L", (tile * per_class + 120, tile * max(len(classes), 1)), 255)
    draw = ImageDraw.Draw(img)
    for row, name in enumerate(classes):
        draw.text((4, row * tile + tile // 2), str(name)[:18], fill=0)
        sample = manifest[manifest["class"] == name].sort_values("uid").head(per_class)
        for col, rel in enumerate(sample["path"]):
            with Image.open(folder / rel) as im:
                img.paste(im.convert("L").resize((tile, tile)), (120 + col * tile, row * tile))
    img.save(path)
