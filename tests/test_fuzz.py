"""libFuzzer over every SQL function (fuzz/run.sh): a million inputs, no crash,
no sanitizer report. Needs clang with libFuzzer and libsqlite3's headers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _libfuzzer_available() -> str | None:
    """None when clang can build a libFuzzer target, else the reason it cannot."""
    if shutil.which("clang") is None:
        return "clang is not installed (Debian: apt-get install clang libclang-rt-14-dev)"
    probe = subprocess.run(
        ["clang", "-fsanitize=fuzzer", "-x", "c", "-", "-o", "/dev/null"],
        input="int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }",
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return "clang has no libFuzzer runtime (Debian: apt-get install libclang-rt-14-dev)"
    return None


def test_a_million_fuzz_inputs_without_a_crash():
    reason = _libfuzzer_available()
    if reason:
        pytest.skip(reason)
    run = subprocess.run(["sh", str(ROOT / "fuzz" / "run.sh")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "no crash" in run.stdout
