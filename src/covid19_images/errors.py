"""Exceptions a user can cause, each with a message that says what to do next.

The command line turns every :class:`Covid19ImagesError` into one clear message and a non-zero
exit code, never a traceback.
"""

from __future__ import annotations


class Covid19ImagesError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_code = 1


class CatalogError(Covid19ImagesError):
    """A catalog entry is malformed or inconsistent."""


class UnknownSourceError(Covid19ImagesError, KeyError):
    """No catalog entry has the given id, alias or name.

    Example:
        >>> str(UnknownSourceError("ieee", ["ieee8023"]))
        "unknown source 'ieee'; did you mean: ieee8023? (see `covid19-images catalog`)"
    """

    exit_code = 2

    def __init__(self, key: str, suggestions: list[str]) -> None:
        self.key = key
        self.suggestions = suggestions
        hint = f"; did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown source {key!r}{hint} (see `covid19-images catalog`)")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class FetchError(Covid19ImagesError):
    """A download, checksum or extraction failed; nothing was marked complete."""


class HostUnreachableError(FetchError):
    """No connection to a download server could be made (offline, name not resolved, refused).

    Not retried: another attempt seconds later would fail the same way.

    Example:
        >>> HostUnreachableError("github.com", "could not download ...").host
        'github.com'
    """

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        super().__init__(message)


class UnsafeArchiveError(FetchError):
    """An archive member would land outside the target folder, or is a link or device."""


class LayoutError(Covid19ImagesError):
    """A folder the user pointed at lacks files the source needs."""

    def __init__(self, source: str, folder: str, missing: list[str]) -> None:
        self.source = source
        self.folder = folder
        self.missing = missing
        listed = "\n".join(f"  - {m}" for m in missing)
        super().__init__(f"{folder} is not a complete {source} folder; missing:\n{listed}")


class SourceNotAvailableError(Covid19ImagesError):
    """A source's files are neither fetched, registered nor in a mirror."""


class ModelError(Covid19ImagesError):
    """A model cannot be built: unknown name, missing torch, or weights that do not fit."""


class EvaluationError(Covid19ImagesError):
    """Predictions that cannot be evaluated: a missing column, an unknown class, no rows for the
    split scored, a probability that is not finite, an unknown operating-point rule."""
