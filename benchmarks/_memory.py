"""Memory figures the benchmarks share: this process's own peak and current sizes (Linux)."""

from __future__ import annotations

import math
import resource
from pathlib import Path


def status_kib(field: str) -> float:
    """A ``/proc/self/status`` field in KiB (``VmHWM``, ``VmRSS``, ``RssAnon``), or NaN."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return float("nan")
    line = next((s for s in status.splitlines() if s.startswith(field + ":")), None)
    return float(line.split()[1]) if line else float("nan")


def peak_rss_kib() -> float:
    """Peak resident size: VmHWM where Linux gives it, else ``ru_maxrss``.

    ``ru_maxrss`` of a process started by another one begins at the parent's peak (Linux keeps
    it across fork and exec), which hides everything below it; VmHWM is this process's own.
    """
    hwm = status_kib("VmHWM")
    if math.isnan(hwm):
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return hwm


def peak_source() -> str:
    """Which figure :func:`peak_rss_kib` reports here."""
    return "ru_maxrss" if math.isnan(status_kib("VmHWM")) else "VmHWM"
