"""Write a file whole or not at all: into a temporary file beside it, then renamed into place.

A reader (or a rerun after a crash) sees the old file or the new one, never half of one, and a
failure leaves no temporary file behind.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> write_text(folder / "note.md", "# hello\\n")
    >>> (folder / "note.md").read_text()
    '# hello\\n'
    >>> sorted(p.name for p in folder.iterdir())  # no temporary file left
    ['note.md']
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["replacing", "write_bytes", "write_json", "write_text", "write_with"]


@contextmanager
def replacing(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed to ``path`` when the block ends without error.

    The temporary name keeps ``path``'s suffix, so writers that choose a format by suffix
    (``DataFrame.to_parquet``, ``Figure.savefig``, ``safetensors``) still see it.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "table.csv"
        >>> with replacing(target) as tmp:
        ...     _ = tmp.write_text("a,b\\n1,2\\n")
        >>> target.read_text()
        'a,b\\n1,2\\n'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(_mode(path))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _mode(path: Path) -> int:
    """The permissions a rewritten file keeps: the old file's, or the umask's default.

    ``mkstemp`` creates its file readable by the owner alone; a dataset or run folder is
    meant to be read by others as any file written with ``open`` would be.
    """
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def write_with(path: Path | str, writer: Callable[[Path], object]) -> None:
    """Call ``writer(tmp)`` and rename ``tmp`` to ``path``."""
    with replacing(path) as tmp:
        writer(tmp)


def write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    write_with(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically; NaN and infinity are refused.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "m.json"
        >>> write_json(target, {"b": 1, "a": [0.5, None]})
        >>> print(target.read_text(), end="")
        {
          "a": [
            0.5,
            null
          ],
          "b": 1
        }
    """
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_text(path, text)
