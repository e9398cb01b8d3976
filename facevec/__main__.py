"""python -m facevec: the command line."""

from .cli import cli

cli()
