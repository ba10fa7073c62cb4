"""The ``covid19-images`` command line (typer + rich)."""

from covid19_images.cli import models as _models  # noqa: F401 - registers the model commands
from covid19_images.cli.app import app, main

__all__ = ["app", "main"]
