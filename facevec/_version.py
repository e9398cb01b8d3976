"""facevec's version: the one place it is written (setup.py gives it to the C compiler)."""

__version__ = "0.1.0"
