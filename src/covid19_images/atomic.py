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
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["json_safe", "replacing", "write_bytes", "write_json", "write_text", "write_with"]


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


def _read_umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _mode(path: Path) -> int:
    """The permissions a rewritten file keeps: the old file's, or the umask's default.

    ``mkstemp`` creates its file readable by the owner alone; a dataset or run folder is
    meant to be read by others as any file written with ``open`` would be.
    """
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


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


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None, numpy scalars and arrays as Python values,
    tuples as lists and mapping keys as strings.

    Example:
        >>> json_safe({"a": float("nan"), 1: np.float32(0.5), "b": (np.int64(2),)})
        {'a': None, '1': 0.5, 'b': [2]}
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value
