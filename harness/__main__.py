"""``python -m ltbench`` runs the command line."""

from .cli import main

main()
