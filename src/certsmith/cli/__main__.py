"""``python -m certsmith.cli``: the same as the ``certsmith`` command."""

from certsmith.cli import main

main()
