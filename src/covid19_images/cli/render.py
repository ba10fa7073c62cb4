"""How catalog entries look on a terminal and in JSON."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from covid19_images.catalog.schema import Count, SourceEntry
from covid19_images.fetch.store import Located


def count_label(count: Count) -> str:
    """One count as text, e.g. ``'349 images, 216 patients (COVID-19 CT images)'``."""
    parts = [
        f"{value:,} {unit}"
        for value, unit in (
            (count.images, "images"),
            (count.patients, "patients"),
            (count.studies, "studies"),
        )
        if value is not None
    ]
    return f"{', '.join(parts) or 'no number'} ({count.what})"


def entry_json(entry: SourceEntry) -> dict[str, Any]:
    """The entry as JSON-ready data, every field included."""
    data = entry.model_dump(mode="json")
    data["license_label"] = entry.license.label()
    return data


def render_catalog(entries: list[SourceEntry], width: int = 200) -> Table:
    """A table with one row per source; names and licences only where the terminal is wide."""
    with_names, with_licence = width >= 160, width >= 110
    with_counts = with_licence
    short_tasks = {"classification": "cls", "segmentation": "seg", "localization": "loc"}
    table = Table(title=f"{len(entries)} sources", show_lines=False, expand=False)
    table.add_column("id", style="bold cyan", no_wrap=True)
    if with_names:
        table.add_column("name")
    table.add_column("modality", no_wrap=True)
    table.add_column("tasks" if with_licence else "tasks*", no_wrap=not with_licence)
    table.add_column("access", no_wrap=True)
    if with_licence:
        table.add_column("licence")
    if with_counts:
        table.add_column("images\n(reported)", justify="right")
    for entry in entries:
        images = next((c.images for c in entry.counts if c.images is not None), None)
        access_style = {"auto": "green", "manual": "yellow", "registration": "red"}[entry.access]
        table.add_row(
            entry.id,
            *([entry.name] if with_names else []),
            ", ".join(entry.modality),
            ", ".join(entry.tasks if with_licence else [short_tasks[t] for t in entry.tasks]),
            Text(entry.access, style=access_style),
            *([entry.license.label()] if with_licence else []),
            *([f"{images:,}" if images is not None else ""] if with_counts else []),
        )
    if not with_licence:
        table.caption = "* cls/seg/loc: classification, segmentation, localization; wider for more"
    return table


def render_info(entry: SourceEntry, located: Located | None) -> RenderableType:
    """Everything known about one source, including how to get its files."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()

    def row(label: str, value: str | None) -> None:
        if value:
            facts.add_row(label, Text(value))

    row("id", entry.id)
    row("aliases", ", ".join(entry.aliases))
    row("also known as", "; ".join(entry.also_known_as))
    row("summary", entry.summary)
    row("modality", ", ".join(entry.modality))
    row("tasks", ", ".join(entry.tasks))
    row("labels", ", ".join(entry.labels))
    row("homepage", entry.homepage)
    row("access", entry.access)
    row("version", entry.version)
    row("subset of", entry.subset_of)
    for count in entry.counts:
        row("count", f"{count_label(count)}; source: {count.reference}")
    lic = entry.license
    row(
        "licence",
        " ".join(
            p
            for p in (
                lic.label(),
                f"<{lic.url}>" if lic.url else None,
                f"— {lic.notes}" if lic.notes else None,
            )
            if p
        ),
    )
    row("cite", entry.citation.text)
    row("DOI", entry.citation.doi)
    if located is not None:
        row("local copy", f"{located.path} ({located.origin})")
    else:
        row("local copy", "none yet")

    parts: list[RenderableType] = [Panel(facts, title=entry.name, title_align="left")]
    parts.append(Panel(_how_to_get(entry), title="How to get it", title_align="left"))
    if entry.layout.tree or entry.layout.notes:
        layout = Text()
        if entry.layout.tree:
            layout.append(entry.layout.tree.strip("\n") + "\n")
        for note in entry.layout.notes:
            layout.append(f"• {note}\n")
        layout.rstrip()
        parts.append(Panel(layout, title="Layout", title_align="left"))
    if entry.caveats or entry.overlaps:
        cav = Text()
        for caveat in entry.caveats:
            cav.append(f"• {caveat}\n")
        for overlap in entry.overlaps:
            cav.append(f"• Overlaps {overlap.source}: {overlap.note}\n")
        cav.rstrip()
        parts.append(Panel(cav, title="Caveats", title_align="left", border_style="yellow"))
    if entry.references:
        parts.append(Text("Sources of these facts: " + "; ".join(entry.references), style="dim"))
    return Group(*parts)


def _how_to_get(entry: SourceEntry) -> Text:
    text = Text()
    if entry.subset_of:
        text.append(f"Part of {entry.subset_of}: ")
        text.append(f"covid19-images fetch {entry.subset_of}\n", style="bold")
    if entry.download:
        text.append("Downloaded and verified for you:\n")
        text.append(f"  covid19-images fetch {entry.id}\n", style="bold")
        for item in entry.download:
            text.append(f"  {item.resolved_url()}\n")
            checksum = item.checksum or "none published (sha256 recorded at first download)"
            text.append(f"  checksum: {checksum}\n")
    if entry.manual:
        kind = "after registration" if entry.access == "registration" else "by hand"
        text.append(f"Download {kind}")
        text.append(f" from {entry.manual.url}:\n" if entry.manual.url else ":\n")
        for i, step in enumerate(entry.manual.steps, 1):
            text.append(f"  {i}. {step}\n")
    if entry.download:
        text.append(
            f"Downloaded already? covid19-images fetch {entry.id} --from FOLDER_OR_ARCHIVE\n"
        )
    if entry.layout.required:
        text.append(f"fetch --from checks: {', '.join(entry.layout.required)}\n")
    text.append(
        f"Or read it in place from a mirror: --mirror DIR with DIR/{entry.id} (or DIR/<alias>)."
    )
    return text
