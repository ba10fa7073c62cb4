"""``lock.json``: what a build read (recipe, seed, size, pixel limit, every source's files) and
the digest of the manifest it wrote, so ``build --lock`` rebuilds exactly that."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from covid19_images import __version__
from covid19_images.assemble.recipe import Recipe
from covid19_images.assemble.result import BuildError
from covid19_images.catalog import load_catalog
from covid19_images.fetch import Located
from covid19_images.records import Record

LOCK = "lock.json"


def make_lock(
    recipe: Recipe,
    seed: int,
    size: int,
    kept: list[Record],
    used: dict[str, Located],
    missing: list[str],
    process: dict[str, Any],
    naive: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The lock of a build (its ``manifest_sha256`` is added when the manifest is written).

    ``naive``: what a naive build (``build --naive``) kept and how it split; the lock then says
    ``"naive": true`` and ``build --lock`` rebuilds it naive.
    """
    files: dict[str, list[tuple[str, str]]] = {s: [] for s in used}
    for r in kept:
        files[r.source].append((r.path_raw, r.sha256_file or ""))
    catalog = load_catalog()
    return {
        "tool": f"covid19-images {__version__}",
        "recipe": recipe.model_dump(mode="json"),
        "seed": seed,
        "size": size,
        "process": process,
        "sources": {
            s: {
                "version": catalog.get(s).version,
                "origin": located.origin,
                "files": len(files[s]),
                "files_sha256": hashlib.sha256(
                    "\n".join(f"{p}\t{h}" for p, h in sorted(files[s])).encode()
                ).hexdigest(),
            }
            for s, located in sorted(used.items())
        },
        "sources_missing": sorted(missing),
        "naive": naive is not None,
        **({"naive_build": naive} if naive is not None else {}),
    }


def read_lock(path: Path) -> dict[str, Any]:
    """Read and validate a lock; ``recipe`` comes back as a :class:`Recipe`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["recipe"] = Recipe.model_validate(data["recipe"])
        data["seed"], data["size"] = int(data["seed"]), int(data["size"])
        if not isinstance(data["sources"], dict):
            raise TypeError("'sources' is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:  # ValidationError is a ValueError
        raise BuildError(f"{path} is not a lock file of covid19-images: {exc}") from exc
    return dict(data)


def check_lock(locked: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse a rebuild whose sources are gone or whose files differ from the lock's."""
    gone = sorted(set(locked["sources"]) - set(now["sources"]))
    if gone:
        raise BuildError(f"sources of the lock are not present now: {', '.join(gone)}")
    changed = [
        s
        for s, info in locked["sources"].items()
        if now["sources"][s].get("files_sha256") != info.get("files_sha256")
    ]
    if changed:
        raise BuildError(
            "the files of these sources differ from the lock, so the build cannot be "
            f"reproduced: {', '.join(changed)}"
        )
