"""Build facevec's two compiled parts from the same C sources in csrc/:

- facevec/bindings/facevec0.so (.dylib, .dll): the loadable SQLite extension. A plain
  shared library, not a Python module: it exports sqlite3_facevec_init and
  does not link libpython, so the sqlite3 shell can `.load` it.
- facevec/bindings/_kernels: the cffi module the Python API calls.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

LOADABLE = "facevec.bindings.facevec0"
SUFFIX = {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")
CFLAGS = [] if sys.platform == "win32" else ["-O3", "-Wall", "-Wextra"]


class BuildExt(build_ext):
    """build_ext that also builds the loadable extension as a plain library."""

    def get_ext_filename(self, fullname):
        # Called with the full dotted name or with its last part only.
        if fullname in (LOADABLE, LOADABLE.rsplit(".", 1)[1]):
            return fullname.replace(".", "/") + SUFFIX
        return super().get_ext_filename(fullname)

    def get_export_symbols(self, ext):
        if ext.name == LOADABLE:
            return ["sqlite3_facevec_init"]
        return super().get_export_symbols(ext)

    def get_libraries(self, ext):
        if ext.name == LOADABLE:
            return list(ext.libraries)  # never libpython
        return super().get_libraries(ext)


loadable = Extension(
    LOADABLE,
    sources=[
        "csrc/sqlite3_facevec.c",
        "csrc/knn.c",
        "csrc/distance.c",
        "csrc/vector_arg.c",
        "csrc/batch.c",
        "csrc/kmeans.c",
    ],
    include_dirs=["csrc", "csrc/sqlite"],
    libraries=[] if sys.platform == "win32" else ["m"],
    extra_compile_args=CFLAGS,
)

setup(
    ext_modules=[loadable],
    cffi_modules=["facevec/bindings/_ffi_build.py:ffi"],
    cmdclass={"build_ext": BuildExt},
)
