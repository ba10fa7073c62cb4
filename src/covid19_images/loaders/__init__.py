"""Loading assembled datasets: the packed fast path and one-liners per framework.

``covid19_images.load(dataset, split, framework=...)`` is the entry point; the framework modules
are imported only when asked for, so importing the package never imports torch or tensorflow.
"""

from covid19_images.loaders.packed import LoadError, PackedSplit, open_split

__all__ = ["LoadError", "PackedSplit", "open_split"]
