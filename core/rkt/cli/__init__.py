"""The ``rkt`` command line: one module per command (or command group)."""
