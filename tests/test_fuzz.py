"""libFuzzer under ASan + UBSan (fuzz/run.sh), bounded to about 2.5 minutes in all:
every SQL function on fuzzed arguments (up to a million inputs), and damaged
gallery files mutated from fuzz/gallery_seeds/ (bytes, and forged values through
SQL) through the statements `facevec info`, `find --strategy knn`, `index` and
`reindex` run. No crash, no sanitizer report.
Needs clang with libFuzzer and libsqlite3's headers."""

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


@pytest.mark.slow
@pytest.mark.parametrize("target", ["sql", "gallery"])
def test_fuzzer_runs_without_a_crash(target):
    reason = _libfuzzer_available()
    if reason:
        pytest.skip(reason)
    run = subprocess.run(
        ["sh", str(ROOT / "fuzz" / "run.sh"), target], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"fuzz {target}:" in run.stdout and "no crash" in run.stdout


def test_the_gallery_seeds_are_what_the_generator_writes(tmp_path):
    """fuzz/gallery_seeds/ holds small valid galleries: each opens, has a knn
    index in the state its name says, and answers facevec_knn."""
    import json

    import numpy as np
    from knn_helpers import connect, extension_under_test

    seeds = sorted((ROOT / "fuzz" / "gallery_seeds").glob("*.db"))
    assert [seed.stem for seed in seeds] == [
        "building",
        "pending",
        "synced",
        "two_chunks_deleted",
    ]
    for seed in seeds:
        assert seed.stat().st_size <= 48 * 1024
        db = tmp_path / seed.name
        db.write_bytes(seed.read_bytes())
        conn = connect(extension_under_test(), db)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        status = json.loads(conn.execute("SELECT facevec_knn_status('face_meta')").fetchone()[0])
        assert status["building"] == (seed.stem == "building")
        assert (status["pending"] > 0) == (seed.stem in ("pending", "two_chunks_deleted"))
        assert status["chunks"] == (2 if seed.stem == "two_chunks_deleted" else 1)
        rows = conn.execute(
            "SELECT rowid FROM facevec_knn('face_meta', ?, 5)", (np.ones(8, "f4").tobytes(),)
        ).fetchall()
        assert len(rows) == 5
        assert conn.execute("SELECT count(*) FROM ingest_ledger").fetchone()[0] > 0
