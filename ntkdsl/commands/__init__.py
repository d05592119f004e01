"""Subcommands of the ``ntkdsl`` command line, one module each (see ntkdsl.cli)."""
