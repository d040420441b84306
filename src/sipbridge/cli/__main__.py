"""``python -m sipbridge.cli``: the same CLI as the ``sipbridge`` command."""

from sipbridge.cli import main

main()
