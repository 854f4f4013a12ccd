"""The ``microfw`` command line (see :mod:`microfw.cli.main`)."""

from microfw.cli.main import main

__all__ = ["main"]
