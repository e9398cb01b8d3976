"""cffi build script: the C kernels of csrc/, compiled into facevec.bindings._kernels.

setup.py wires it with ``cffi_modules=["facevec/bindings/_ffi_build.py:ffi"]``; the same
C files are compiled into the loadable SQLite extension.

The declarations are not copied here: they are the part of each header between
``/* cffi: begin */`` and ``/* cffi: end */``, so the module can never drift from the C.
"""

import re
import sys
from pathlib import Path

from cffi import FFI

# Relative to the project root, where setup.py runs (setuptools wants relative sources).
CSRC = "csrc"
HEADERS = ("facevec.h", "vector_arg.h", "batch.h", "kmeans.h", "codes.h")
MARKED = re.compile(r"/\* cffi: begin \*/(.*?)/\* cffi: end \*/", re.DOTALL)


def declarations(header: Path) -> str:
    """The marked declarations of a header, as ``ffi.cdef`` takes them: the
    comments go (cffi's parser would skip them, but the cdef reads better without),
    and nothing else may need to (no macros with values other than integers, no
    inline functions, no preprocessor conditionals)."""
    blocks = MARKED.findall(header.read_text())
    if not blocks:
        raise RuntimeError(f"{header} has no /* cffi: begin */ ... /* cffi: end */ block")
    text = re.sub(r"/\*.*?\*/", "", "\n".join(blocks), flags=re.DOTALL)
    text = "\n".join(line.rstrip() for line in text.splitlines() if line.strip())
    if re.search(r"^\s*#\s*(if|ifdef|ifndef|else|endif|include)\b|\binline\b", text, re.M):
        raise RuntimeError(f"{header}: the cffi block holds what cffi cannot parse")
    return text


CDEF = "\n".join(
    [declarations(Path(__file__).resolve().parents[2] / CSRC / name) for name in HEADERS]
    + ["void free(void *p); /* <stdlib.h>: frees fv_vector_to_json's text */"]
)

ffi = FFI()
ffi.cdef(CDEF)
ffi.set_source(
    "facevec.bindings._kernels",
    "".join(f'#include "{name}"\n' for name in HEADERS) + "#include <stdlib.h>\n",
    sources=[
        f"{CSRC}/{name}"
        for name in ("distance.c", "vector_arg.c", "batch.c", "kmeans.c", "codes.c")
    ],
    include_dirs=[CSRC],
    # Hidden: the module exports PyInit__kernels only, so a facevec0 library
    # loaded before it (RTLD_GLOBAL) cannot stand in for its functions.
    extra_compile_args=[]
    if sys.platform == "win32"
    else ["-O3", "-Wall", "-Wextra", "-fvisibility=hidden"],
)

if __name__ == "__main__":
    ffi.compile(verbose=True)
