"""facevec's version, written here only: setup.py passes it to the C code."""

__version__ = "0.1.0"
