"""``python -m rkt.cli``: the same as the ``rkt`` console script."""

from rkt.cli.main import main

main()
