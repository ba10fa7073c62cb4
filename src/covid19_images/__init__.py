"""covid19-images: trustworthy, ready-to-train COVID-19 chest X-ray and CT datasets.

Research use only. These data and the models trained on them are for research: a positive CT can
support COVID-19, a negative scan rules nothing out, and nothing here is a diagnostic device.

Example:
    >>> import covid19_images
    >>> entry = covid19_images.get_source("ieee8023")
    >>> entry.access
    'auto'
"""

from pathlib import Path
from typing import Any

from covid19_images.catalog import Catalog, SourceEntry, get_source, load_catalog

__version__ = "0.1.0"

RESEARCH_USE_NOTICE = (
    "Research use only: these data and models are for research. A positive CT can support "
    "COVID-19, a negative scan rules nothing out, and nothing here is a diagnostic device."
)


def load(
    dataset: Path | str,
    split: str = "train",
    framework: str = "torch",
    size: int | None = None,
    augment: str | None = None,
    **options: Any,
) -> Any:
    """One split of an assembled dataset as a framework's object, e.g. a PyTorch ``Dataset``.

    See :func:`covid19_images.loaders.api.load`; frameworks are imported only here, when asked.

    Example:
        >>> train = load("datasets/xray-covid", "train", framework="torch")  # doctest: +SKIP
    """
    from covid19_images.loaders.api import load as load_split

    return load_split(dataset, split, framework, size, augment, **options)


def train(dataset: Path | str, model: str = "resnet18", **options: Any) -> Any:
    """Train ``model`` on a built dataset and write its run folder; returns the run.

    ``options`` are :class:`covid19_images.training.TrainConfig` fields (``epochs``, ``size``,
    ``batch_size``, ``lr``, ``augment``, ``seed``, ``device``, ``patience``, ``balance``,
    ``pretrained``, ``workers``, ``leave_out``, ``steps``) and :func:`covid19_images.training.train`
    arguments (``out``, ``name``, ``resume``, ``overwrite``, ``progress``, ``evaluate``,
    ``n_boot``). Needs the ``[torch]`` extra.

    Example:
        >>> import covid19_images as ci
        >>> run = ci.train("datasets/xray-covid", "densenet121", epochs=5)  # doctest: +SKIP
        >>> run.path  # doctest: +SKIP
        PosixPath('runs/xray-covid-densenet121-s0')
    """
    from dataclasses import fields

    from covid19_images.training import TrainConfig
    from covid19_images.training import train as train_run

    names = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(model=model, **{k: v for k, v in options.items() if k in names})
    return train_run(dataset, config, **{k: v for k, v in options.items() if k not in names})


def evaluate(run: Path | str, **options: Any) -> dict[str, Any]:
    """Evaluate a run (``dataset=`` another built dataset for external validation, ``split=``,
    ``out=``, ``rule=``, ``n_boot=``); writes ``metrics.json`` and ``report.md``, returns the
    metrics. See :func:`covid19_images.training.assess.evaluate_run`.

    Example:
        >>> metrics = evaluate("runs/xray-covid-densenet121-s0")  # doctest: +SKIP
        >>> metrics["image"]["classes"]["covid19"]["auroc"]["value"]  # doctest: +SKIP
        0.91
    """
    from covid19_images.training.assess import evaluate_run

    return evaluate_run(run, **options)


def explain(run: Path | str, images: tuple[str, ...] = (), **options: Any) -> Any:
    """Grad-CAM of a run's model on ``images`` (uids or files) or ``n=`` images of ``split=``;
    see :func:`covid19_images.explanation.run.explain_run`.

    Example:
        >>> result = explain("runs/xray-covid-densenet121-s0", n=8)  # doctest: +SKIP
        >>> result.folder.name  # doctest: +SKIP
        'explain'
    """
    from covid19_images.explanation.run import explain_run

    return explain_run(run, images, **options)


__all__ = [
    "RESEARCH_USE_NOTICE",
    "Catalog",
    "SourceEntry",
    "__version__",
    "evaluate",
    "explain",
    "get_source",
    "load",
    "load_catalog",
    "train",
]
