"""The extension built with AddressSanitizer + UndefinedBehaviorSanitizer,
loaded into the real sqlite3 shell, runs the SQL batteries of tests/sql/ and a
stress script (every dimension 1..70 and 4096, misaligned BLOBs, bad input)
without a single sanitizer report.

The shell is not instrumented, so libasan is preloaded into it. Leak
detection stays on: the shell itself leaks nothing on these scripts, and a
canary extension proves that both a buffer overflow and a leak are reported.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sqlpaths import DISTANCE_FUNCTIONS, VECTOR_FUNCTIONS
from sqlshell import (
    ERRORS_SQL,
    FUNCTIONS_SQL,
    SQL_DIR,
    WHY_NO_SHELL,
    check_battery,
    check_errors_battery,
    check_functions_battery,
    run_shell,
    sqlite3_shell,
)

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
SANITIZE = [
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-g",
    "-O1",
    "-fno-omit-frame-pointer",
    "-shared",
    "-fPIC",
    "-Wall",
    "-Wextra",
]
REPORTS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer")
CANARY = """#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT1
#include <stdlib.h>
#include <string.h>
/* canary(n): reads byte n of an 8-byte buffer, and leaks it when n is 0. */
static void canary(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  int n = sqlite3_value_int(argv[0]);
  char *p = malloc(8);
  memset(p, 1, 8);
  sqlite3_result_int(ctx, p[n]);
  if (n != 0) free(p);
}
int sqlite3_canary_init(sqlite3 *db, char **err, const sqlite3_api_routines *api) {
  (void)err;
  SQLITE_EXTENSION_INIT2(api);
  return sqlite3_create_function(db, "canary", 1, SQLITE_UTF8, 0, canary, 0, 0);
}
"""


def libasan() -> str | None:
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    path = subprocess.run(
        [gcc, "-print-file-name=libasan.so"], capture_output=True, text=True
    ).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sqlite3_shell() is None, reason=WHY_NO_SHELL),
    pytest.mark.skipif(
        libasan() is None, reason="gcc with libasan is needed (apt-get install gcc)"
    ),
]


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    """The sanitized extension (facevec0.so) and the canary (canary.so)."""
    out = tmp_path_factory.mktemp("asan")
    sources = sorted(CSRC.glob("*.c"))
    includes = ["-I", str(CSRC), "-I", str(CSRC / "sqlite")]
    version = re.search(
        r'^__version__ = "([^"]+)"$', (ROOT / "facevec" / "_version.py").read_text(), re.M
    ).group(1)
    compile_ = subprocess.run(
        [
            "gcc",
            *SANITIZE,
            *includes,
            f'-DFACEVEC_VERSION="{version}"',
            *map(str, sources),
            "-o",
            str(out / "facevec0.so"),
            "-lm",
        ],
        capture_output=True,
        text=True,
    )
    assert compile_.returncode == 0 and "warning" not in compile_.stderr, compile_.stderr
    (out / "canary.c").write_text(CANARY)
    subprocess.run(
        ["gcc", *SANITIZE, *includes, str(out / "canary.c"), "-o", str(out / "canary.so")],
        check=True,
    )
    return out


def run_sanitized(extension: Path, sql: str) -> subprocess.CompletedProcess[str]:
    env = {
        "LD_PRELOAD": libasan(),
        "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    return run_shell(str(extension.with_suffix("")), sql, env=env, timeout=300)


def assert_no_report(result: subprocess.CompletedProcess[str]) -> None:
    found = [word for word in REPORTS if word in result.stderr]
    assert not found, result.stderr[-5000:]


def test_canary_proves_the_sanitizers_are_live(build):
    overflow = run_sanitized(build / "canary.so", "select canary(8);\n")
    # UBSan's object-size check or ASan, whichever sees it first.
    assert "heap-buffer-overflow" in overflow.stderr or "insufficient space" in overflow.stderr
    leak = run_sanitized(build / "canary.so", "select canary(0);\n")
    assert "LeakSanitizer: detected memory leaks" in leak.stderr
    clean = run_sanitized(build / "canary.so", "select canary(3);\n")
    assert clean.returncode == 0 and clean.stdout.strip() == "1", clean.stderr


def test_functions_battery_under_sanitizers(build):
    sql = FUNCTIONS_SQL.read_text()
    result = run_sanitized(build / "facevec0.so", sql)
    assert_no_report(result)
    check_functions_battery(result, sql)


def test_errors_battery_under_sanitizers(build):
    sql = ERRORS_SQL.read_text()
    result = run_sanitized(build / "facevec0.so", sql)
    assert_no_report(result)
    check_errors_battery(result, sql)


def test_knn_script_under_sanitizers(build):
    """tests/sql/knn.sql: build, sync, query and errors of facevec_knn."""
    result = run_sanitized(build / "facevec0.so", (SQL_DIR / "knn.sql").read_text())
    assert_no_report(result)
    assert "facevec_knn: query has 3 dimensions, the index of face_meta has 4" in result.stderr
    assert '"vectors":2001,"pending":0' in result.stdout


def test_knn_ivf_script_under_sanitizers(build):
    """tests/sql/knn_ivf.sql: the IVF option and batches, and damaged IVF tables."""
    result = run_sanitized(build / "facevec0.so", (SQL_DIR / "knn_ivf.sql").read_text())
    assert_no_report(result)
    assert '"lists":20' in result.stdout
    assert "query 1 of the batch has 2 dimensions, query 0 has 4" in result.stderr
    assert "names list 2147483647" in result.stderr
    assert "its centroids hold 1 bytes, expected 320" in result.stderr
    assert '"vectors":2000,"pending":0,"building":false' in result.stdout  # stepped
    assert '"skipped":2' in result.stdout
    assert "its build state is malformed" in result.stderr


def test_knn_quant_script_under_sanitizers(build):
    """tests/sql/knn_quant.sql: float16 / int8 storage, re-ranking, damaged quantisation."""
    result = run_sanitized(build / "facevec0.so", (SQL_DIR / "knn_quant.sql").read_text())
    assert_no_report(result)
    assert '"storage":"int8"' in result.stdout and '"storage":"float16"' in result.stdout
    assert "storage int8 is trained on the vectors of face_meta" in result.stderr
    assert "its quantisation parameters hold 1 bytes, expected 32" in result.stderr
    assert "quantisation parameter 0 is not a finite minimum and positive scale" in result.stderr
    assert "which face_meta does not hold" in result.stderr


def test_knn_hostile_script_under_sanitizers(build):
    """tests/sql/knn_hostile.sql: forged and damaged indexes, huge k."""
    sql = (SQL_DIR / "knn_hostile.sql").read_text()
    result = run_sanitized(build / "facevec0.so", sql)
    assert_no_report(result)
    check_battery(result, sql)


CHUNK_CACHE_SQL = """
.open {db}
.load {extension}
PRAGMA journal_mode = WAL;
CREATE TABLE face_meta(id INTEGER PRIMARY KEY, embedding BLOB);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
INSERT INTO face_meta SELECT i, vector_from_json('[' || (i % 37) || ',' || (i % 11) || ','
  || (i % 5) || ',' || ((i * 7) % 13) || ']') FROM n;
SELECT facevec_knn_cache_size(40000);
SELECT facevec_knn_build('face_meta', 'embedding', NULL, '{{"lists": 8, "storage": "{storage}"}}');
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 20, 'euclidean', NULL, 3);
SELECT count(*) FROM facevec_knn('face_meta', '[9,2,1,4]', 50, 'cosine', NULL, 8);
SELECT count(*) FROM facevec_knn_batch('face_meta', '[[1,2,3,4],[5,5,5,5],[0,1,0,1],[3,3,3,3],
  [1,1,1,1],[2,2,2,2],[4,4,4,4],[6,6,6,6],[7,7,7,7],[8,8,8,8],[9,9,9,9],[1,0,0,0],[0,0,1,0]]',
  10, 'euclidean', NULL, 4);
DELETE FROM face_meta WHERE id % 97 = 0;
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 20, 'euclidean', NULL, 3);
SELECT facevec_knn_sync('face_meta');
BEGIN;
DELETE FROM face_meta WHERE id % 89 = 0;
SELECT facevec_knn_sync('face_meta');
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 20, 'euclidean', NULL, 8);
ROLLBACK;
UPDATE face_meta_fvknn_chunks SET rowids = rowids WHERE id = 1;
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 20, 'euclidean', NULL, 8);
SELECT facevec_knn_cache_size(1 << 30);
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2000, 'euclidean', NULL, 8);
SELECT 'cache', facevec_knn_cache_status();
SELECT facevec_knn_drop('face_meta');
SELECT facevec_knn_cache_size(0);
SELECT 'emptied', facevec_knn_cache_status();
"""


@pytest.mark.parametrize("storage", ["float32", "float16", "int8"])
def test_the_chunk_cache_under_sanitizers(build, tmp_path, storage):
    """Searches of a file through the chunk cache: a budget that evicts, batches,
    logged and synced deletes, a rolled-back sync, an edit of the chunks, a drop."""
    extension = build / "facevec0"  # loaded again into the file's connection
    sql = CHUNK_CACHE_SQL.format(db=tmp_path / "cache.db", extension=extension, storage=storage)
    result = run_sanitized(build / "facevec0.so", sql)
    assert_no_report(result)
    assert not result.stderr.strip(), result.stderr[-3000:]
    assert '"hits":' in result.stdout and "emptied|" in result.stdout
    assert 'emptied|{"budget":0,"bytes":0,"chunks":0' in result.stdout


def hex_blob(values) -> str:
    return "x'" + np.asarray(values, dtype="<f4").tobytes().hex() + "'"


def stress_sql() -> tuple[str, int]:
    """Valid calls at every dimension (each yields 'ok|1') and invalid ones."""
    rng = np.random.default_rng(0)
    text = random.Random(0)
    lines, checks = [], 0
    for dim in (*range(1, 71), 127, 128, 129, 4096):
        a = rng.standard_normal(dim).astype(np.float32)
        b = rng.standard_normal(dim).astype(np.float32)
        json_a = "[" + ",".join(repr(float(x)) for x in a) + "]"
        for fn in DISTANCE_FUNCTIONS:
            lines.append(f"select 'ok', {fn}({hex_blob(a)}, {hex_blob(b)}) is not null;")
            lines.append(f"select 'ok', {fn}('{json_a}', {hex_blob(b)}) is not null;")
            checks += 2
        for fn in VECTOR_FUNCTIONS:
            lines.append(f"select 'ok', {fn}({hex_blob(a)}) is not null;")
            lines.append(f"select 'ok', {fn}('{json_a}') is not null;")
            checks += 2
        # BLOBs at every offset within the page, and a constant JSON query over rows
        lines.append("drop table if exists t; create table t (pad text, v blob);")
        for shift in range(8):
            lines.append(f"insert into t values ('{'x' * shift}', {hex_blob(a)});")
        for fn in DISTANCE_FUNCTIONS:
            lines.append(f"select 'ok', count({fn}(v, '{json_a}')) = 8 from t;")
            checks += 1
        # Invalid: truncated BLOBs and JSON, mismatched dimensions, random bytes.
        raw = a.tobytes()
        for cut in (1, 2, 3, 5):
            if len(raw) > cut:
                lines.append(f"select euclidean_distance(x'{raw[:-cut].hex()}', {hex_blob(a)});")
        lines.append(f"select cosine_distance('{json_a[:-1]}', {hex_blob(a)});")
        lines.append(f"select inner_product({hex_blob(a)}, {hex_blob(np.append(b, 1))});")
        garbage = "".join(text.choice('[]{},.-+0123456789eE "naN') for _ in range(dim))
        lines.append(f"select vector_dims('{garbage}');")
        lines.append(f"select vector_to_json(randomblob({dim * 4}));")
        lines.append(f"select euclidean_l2_distance(randomblob({dim * 4}), randomblob({dim * 4}));")
    return "\n".join(lines) + "\n", checks


def test_stress_under_sanitizers(build):
    sql, checks = stress_sql()
    result = run_sanitized(build / "facevec0.so", sql)
    assert_no_report(result)
    results = [row for row in result.stdout.splitlines() if row.startswith("ok|")]
    assert results == ["ok|1"] * checks


def test_batch_and_kmeans_under_sanitizers(tmp_path):
    """tests/c/check_batch.c (batch top-k, assignment and k-means against
    fv_top_k, every screen kernel) built with the same sanitizers."""
    binary = tmp_path / "check_batch"
    flags = [flag for flag in SANITIZE if flag not in ("-shared", "-fPIC")]
    sources = [ROOT / "tests" / "c" / "check_batch.c", CSRC / "distance.c", CSRC / "kmeans.c"]
    compile_ = subprocess.run(
        ["gcc", *flags, "-I", str(CSRC), *map(str, sources), "-o", str(binary), "-lm"],
        capture_output=True,
        text=True,
    )
    assert compile_.returncode == 0 and "warning" not in compile_.stderr, compile_.stderr
    env = {
        "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    result = subprocess.run(
        [str(binary), "16"], capture_output=True, text=True, env=env, timeout=600
    )
    assert_no_report(result)
    assert result.returncode == 0 and result.stdout.endswith("batch ok\n"), result.stdout
