"""``python -m sipbridge``: the same CLI as the ``sipbridge`` command."""

from sipbridge.cli import main

main()
