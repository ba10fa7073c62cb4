"""Which framework a loader needs, and importing it safely (shared by every loader).

A module of its own so that the loader front door (:mod:`covid19_images.loaders.api`) and the
framework loaders it imports lazily (:mod:`covid19_images.loaders.tfdata`) both use it without
importing each other.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Final

from covid19_images.errors import Covid19ImagesError


class FrameworkMissingError(Covid19ImagesError):
    """The framework a loader needs is not installed."""


FRAMEWORKS: Final[dict[str, tuple[str, str]]] = {
    "numpy": ("numpy", ""),
    "torch": ("torch", "torch"),
    "tf": ("tensorflow", "tf"),
    "fastai": ("fastai", "fastai"),
    "monai": ("monai", "monai"),
    "hf": ("datasets", "hf"),
}
"""Framework name → (module it needs, the extra that installs it)."""


def triton_before_tensorflow() -> None:
    """Import Triton before TensorFlow, where Triton is installed and TensorFlow not yet imported.

    Triton (which CUDA builds of torch install, and which ``import monai`` and ``torch.compile``
    load) segfaults the process when it is imported after TensorFlow; imported before, both work.
    """
    if "tensorflow" not in sys.modules and importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")


def require(framework: str) -> None:
    """Import the framework's module, or raise :class:`FrameworkMissingError` naming the extra.

    Example:
        >>> require("numpy")
    """
    module, extra = FRAMEWORKS[framework]
    if framework == "tf":
        triton_before_tensorflow()
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise FrameworkMissingError(
            f"framework={framework!r} needs {module}, which is not installed here ({exc}): "
            f"pip install 'covid19-images[{extra}]'"
        ) from exc
