"""Subcommands of the ``curriculum`` command line, one module each (see :mod:`curriculum.cli`)."""
