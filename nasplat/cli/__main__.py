"""``python -m nasplat.cli``: the ``nasplat`` command."""

from nasplat.cli._main import main

main()
