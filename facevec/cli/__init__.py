"""The facevec command line: a thin mirror of the Python API.

``main`` holds the group and the shared options; each command module registers
its commands on import.
"""

from . import gallery, people, serve, spark, transfer, watch  # noqa: F401  (registers the commands)
from .main import cli

__all__ = ["cli"]
