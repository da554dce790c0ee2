"""The ``facespace`` command line: one module per command group."""
