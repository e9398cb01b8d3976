"""Exceptions raised by facevec.

Each subclasses both :class:`FacevecError` and the matching built-in, so
callers can catch either (``except ValueError`` or ``except FacevecError``).
"""

from __future__ import annotations


class FacevecError(Exception):
    """Base class of every error facevec raises."""


class VectorError(FacevecError, ValueError):
    """A vector, or a matrix of vectors, is not what the operation needs."""


class DimensionMismatchError(VectorError):
    """Two vectors (or a vector and a matrix) have different dimensions."""


class ExtensionError(FacevecError, RuntimeError):
    """The SQLite extension cannot be found or loaded."""


class FallbackWarning(RuntimeWarning):
    """facevec is using its slower pure-Python registration of the SQL functions."""
