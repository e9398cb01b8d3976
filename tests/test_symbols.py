"""The compiled libraries export their entry points and nothing else.

SQLite loads an extension with RTLD_GLOBAL, so every function a library
exports is a candidate for later lookups: an exported fv_distance of one
facevec0 build would stand in for another build's (two versions in one
process, as an A/B benchmark loads them) or for the cffi module's own. Both
are compiled with hidden visibility and mark only their entry point.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import facevec
from facevec.bindings import _kernels


def exported(library: Path) -> set[str]:
    if sys.platform != "linux":
        pytest.skip("reads ELF dynamic symbols (Linux)")
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    out = subprocess.run(
        [nm, "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_the_extension_exports_its_entry_point_only():
    assert exported(Path(facevec.loadable_path() + ".so")) == {"sqlite3_facevec_init"}


def test_the_cffi_module_exports_its_init_only():
    assert exported(Path(_kernels.__file__)) == {"PyInit__kernels"}
