"""``python -m certsmith`` runs the command line."""

from certsmith.cli import main

main()
