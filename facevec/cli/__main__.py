"""python -m facevec.cli: the command line."""

from . import cli

cli()
