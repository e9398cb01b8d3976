"""The cffi module's declarations come from the C headers (the blocks between
``/* cffi: begin */`` and ``/* cffi: end */``), so Python and C cannot drift:
every name the bindings use from ``lib`` is declared there, and the compiled
module has it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from facevec.bindings._kernels import lib

ROOT = Path(__file__).resolve().parent.parent
BINDINGS = ROOT / "facevec" / "bindings"


@pytest.fixture(scope="module")
def ffi_build():
    spec = importlib.util.spec_from_file_location("_ffi_build", BINDINGS / "_ffi_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def used_names() -> set[str]:
    names = set()
    for path in BINDINGS.glob("*.py"):
        names |= set(re.findall(r"\blib\.(\w+)", path.read_text()))
    return names


def test_the_declarations_are_the_headers(ffi_build):
    for header in ffi_build.HEADERS:
        text = (ROOT / "csrc" / header).read_text()
        (block,) = re.findall(r"/\* cffi: begin \*/(.*?)/\* cffi: end \*/", text, re.S)
        for name in re.findall(r"\b(fv_\w+)\s*\(|#define (FV_\w+)", block):
            assert (name[0] or name[1]) in ffi_build.CDEF
    assert "/*" not in ffi_build.CDEF.replace("/* <stdlib.h>", "")


def test_every_name_the_bindings_use_is_declared_and_compiled(ffi_build):
    names = used_names()
    assert {"fv_top_k", "fv_distances", "fv_vector_from_arg", "FV_NAN"} <= names
    for name in names:
        assert re.search(rf"\b{name}\b", ffi_build.CDEF), name
        assert hasattr(lib, name), name


def test_a_header_without_the_markers_is_refused(ffi_build, tmp_path):
    header = tmp_path / "plain.h"
    header.write_text("int fv_answer(void);\n")
    with pytest.raises(RuntimeError, match="no /\\* cffi: begin \\*/"):
        ffi_build.declarations(header)
    header.write_text(
        "/* cffi: begin */\nstatic inline int f(void) { return 1; }\n/* cffi: end */\n"
    )
    with pytest.raises(RuntimeError, match="cannot parse"):
        ffi_build.declarations(header)
