"""``python -m covid19_images`` runs the command line."""

from covid19_images.cli import main

main()
