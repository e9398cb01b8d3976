"""Bindings to facevec's C code in csrc/: the one place Python meets C.

- ``kernels``: distances and exact top-k over numpy arrays (cffi module ``_kernels``);
- ``extension``: the loadable SQLite extension (``facevec0``): find it, load it,
  open connections with it;
- ``fallback``: the same SQL functions registered from Python, for a ``sqlite3``
  that cannot load extensions.
"""
