"""How catalog entries look on a terminal and in JSON."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.rule import Rule
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
    """A table with one row per source: licences always (under the id where the terminal is
    narrow), names and counts where it is wide."""
    with_names, wide = width >= 160, width >= 110
    short_tasks = {"classification": "cls", "segmentation": "seg", "localization": "loc"}
    table = Table(
        title=f"{len(entries)} sources",
        show_lines=False,
        expand=False,
        box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD,  # narrow: no side borders
        pad_edge=wide,
    )
    # Narrow: each source's licence on a line of its own under its id, never dropped.
    table.add_column("id" if wide else "id\n  licence", no_wrap=wide)
    if with_names:
        table.add_column("name")
    table.add_column("modality", no_wrap=True)
    table.add_column("tasks", no_wrap=not wide)
    table.add_column("access", no_wrap=True)
    if wide:
        table.add_column("licence")
    if wide:
        table.add_column("images\n(reported)", justify="right")
    for entry in entries:
        images = next((c.images for c in entry.counts if c.images is not None), None)
        access_style = {"auto": "green", "manual": "yellow", "registration": "red"}[entry.access]
        ident = Text(entry.id, style="bold cyan")
        if not wide:
            ident.append(f"\n  {entry.license.label()}", style="default")
        table.add_row(
            ident,
            *([entry.name] if with_names else []),
            ",".join(entry.modality) if not wide else ", ".join(entry.modality),
            ", ".join(entry.tasks if wide else [short_tasks[t] for t in entry.tasks]),
            Text(entry.access, style=access_style),
            *([entry.license.label()] if wide else []),
            *([f"{images:,}" if images is not None else ""] if wide else []),
        )
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
    # No panel around the ways to get it: a URL is never wrapped, so it can be copied whole.
    parts += [Rule("How to get it", align="left"), *_how_to_get(entry), Rule()]
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


def _how_to_get(entry: SourceEntry) -> list[Text]:
    """The ways to get a source, one line each; commands and URLs never wrap."""
    lines: list[Text] = []

    def line(text: str, style: str = "", whole: bool = False) -> None:
        lines.append(Text(text, style=style, no_wrap=whole, overflow="ignore" if whole else "fold"))

    if entry.subset_of:
        line(f"Part of {entry.subset_of}:")
        line(f"  covid19-images fetch {entry.subset_of}", "bold", whole=True)
    if entry.download:
        line("Downloaded and verified for you:")
        line(f"  covid19-images fetch {entry.id}", "bold", whole=True)
        for item in entry.download:
            line(f"  {item.resolved_url()}", whole=True)
            checksum = item.checksum or "none published (sha256 recorded at first download)"
            line(f"  checksum: {checksum}", whole=bool(item.checksum))
    if entry.manual:
        kind = "after registration" if entry.access == "registration" else "by hand"
        line(f"Download {kind}" + (" from:" if entry.manual.url else ":"))
        if entry.manual.url:
            line(f"  {entry.manual.url}", whole=True)
        for i, step in enumerate(entry.manual.steps, 1):
            line(f"  {i}. {step}")
    if entry.download:
        line("Downloaded already?")
        line(f"  covid19-images fetch {entry.id} --from FOLDER_OR_ARCHIVE", "bold", whole=True)
    if entry.layout.required:
        line(f"fetch --from checks: {', '.join(entry.layout.required)}")
    line(f"Or read it in place from a mirror: --mirror DIR with DIR/{entry.id} (or DIR/<alias>).")
    return lines
