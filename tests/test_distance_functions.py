"""facevec's SQL functions against a float64 numpy reference, through both
loading paths (the C extension, and the Python fallback over the same kernels)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import warnings

import numpy as np
import pytest
from facevec.bindings._kernels import lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sqlpaths import (
    DISTANCE_FUNCTIONS,
    PATHS,
    assert_matches_reference,
    blob,
    connect,
    encode,
    json_text,
    reference,
)

import facevec
import facevec.bindings.extension

# Not multiples of any SIMD width, around them, and the sizes the issue names.
DIMS = (1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 128, 512, 4096)
ENCODINGS = (("blob", "blob"), ("json", "json"), ("blob", "json"), ("json", "blob"))


@pytest.fixture(scope="module", params=PATHS)
def conn(request):
    connection = connect(request.param)
    yield connection
    connection.close()


@pytest.fixture
def scalar_kernels():
    """The portable C kernels in the cffi module (the fallback path and
    facevec.distances); the loaded extension keeps its own dispatch."""
    lib.fv_force_scalar(1)
    try:
        yield
    finally:
        lib.fv_force_scalar(0)


def vector_pairs(dim: int, count: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(dim)
    pairs = []
    for scale in (1.0, 1e-3, 1e3)[:count]:
        a = (rng.standard_normal(dim) * scale).astype(np.float32)
        b = (rng.standard_normal(dim) * scale).astype(np.float32)
        pairs.append((a, b))
    # A near neighbour: where cancellation in the kernels would show.
    a = rng.standard_normal(dim).astype(np.float32)
    pairs.append((a, (a + rng.standard_normal(dim) * 1e-3).astype(np.float32)))
    return pairs


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("fn", DISTANCE_FUNCTIONS)
def test_distance_matches_numpy(conn, fn, dim):
    for a, b in vector_pairs(dim):
        for enc_a, enc_b in ENCODINGS:
            (got,) = conn.execute(
                f"SELECT {fn}(?, ?)", (encode(a, enc_a), encode(b, enc_b))
            ).fetchone()
            assert_matches_reference(fn, got, a, b)


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("fn", DISTANCE_FUNCTIONS)
def test_scalar_kernels_match_numpy_and_simd(connections, scalar_kernels, fn, dim):
    fallback = connections["fallback"]
    for a, b in vector_pairs(dim):
        (scalar,) = fallback.execute(f"SELECT {fn}(?, ?)", (blob(a), blob(b))).fetchone()
        assert_matches_reference(fn, scalar, a, b)
        lib.fv_force_scalar(0)
        (simd,) = fallback.execute(f"SELECT {fn}(?, ?)", (blob(a), blob(b))).fetchone()
        lib.fv_force_scalar(1)
        assert_matches_reference(fn, simd, a, b)


def test_isa_is_reported_consistently(connections):
    isa = facevec.isa()
    assert isa in ("avx512", "avx2", "neon", "scalar")
    for connection in connections.values():
        assert connection.execute("SELECT facevec_isa()").fetchone() == (isa,)


@pytest.mark.parametrize("dim", (1, 7, 17, 128))
def test_misaligned_blobs_in_table(conn, dim):
    """A BLOB read from a table points into the page at any byte offset."""
    rng = np.random.default_rng(1000 + dim)
    query = rng.standard_normal(dim).astype(np.float32)
    conn.execute("DROP TABLE IF EXISTS misaligned")
    conn.execute("CREATE TABLE misaligned (id INTEGER PRIMARY KEY, pad TEXT, v BLOB)")
    rows = {}
    for shift in range(16):  # every offset mod 16 the preceding text can cause
        v = rng.standard_normal(dim).astype(np.float32)
        rows[shift] = v
        conn.execute("INSERT INTO misaligned VALUES (?, ?, ?)", (shift, "x" * shift, blob(v)))
    for fn in DISTANCE_FUNCTIONS:
        got = conn.execute(
            f"SELECT id, {fn}(v, ?), {fn}(?, v) FROM misaligned ORDER BY id", (blob(query),) * 2
        ).fetchall()
        for shift, d1, d2 in got:
            assert_matches_reference(fn, d1, rows[shift], query)
            assert_matches_reference(fn, d2, query, rows[shift])
    for (dims,) in conn.execute("SELECT vector_dims(v) FROM misaligned"):
        assert dims == dim
    for shift, back in conn.execute(
        "SELECT id, vector_from_json(vector_to_json(v)) FROM misaligned"
    ):
        assert back == blob(rows[shift])


@pytest.mark.parametrize("offset", range(1, 8))
def test_misaligned_blob_from_substr(conn, offset):
    rng = np.random.default_rng(offset)
    a, b = rng.standard_normal((2, 33)).astype(np.float32)
    padded = b"\x00" * offset + blob(a) + b"\x00" * 3
    for fn in DISTANCE_FUNCTIONS:
        (got,) = conn.execute(
            f"SELECT {fn}(substr(?, ?, ?), ?)", (padded, offset + 1, a.nbytes, blob(b))
        ).fetchone()
        assert_matches_reference(fn, got, a, b)


def test_order_by_limit_matches_numpy(conn):
    """The usual query: a constant query vector (its parsed JSON is cached
    across rows) against a column, stored as BLOB and as JSON TEXT."""
    rng = np.random.default_rng(7)
    matrix = rng.standard_normal((200, 33)).astype(np.float32)
    query = rng.standard_normal(33).astype(np.float32)
    conn.execute("DROP TABLE IF EXISTS faces")
    conn.execute("CREATE TABLE faces (id INTEGER PRIMARY KEY, v BLOB, j TEXT)")
    conn.executemany(
        "INSERT INTO faces VALUES (?, ?, ?)",
        [(i, blob(row), json_text(row)) for i, row in enumerate(matrix)],
    )
    expected = np.argsort(((matrix.astype(np.float64) - query) ** 2).sum(1), kind="stable")[:10]
    for column in ("v", "j"):
        for q in (blob(query), json_text(query)):
            ids = [
                r[0]
                for r in conn.execute(
                    f"SELECT id FROM faces ORDER BY euclidean_distance({column}, ?) LIMIT 10",
                    (q,),
                )
            ]
            assert ids == expected.tolist()
    # Every row's own value, not a cached one, for a non-constant JSON column.
    got = conn.execute(
        "SELECT id, cosine_distance(j, ?), cosine_distance(?, j) FROM faces ORDER BY id",
        (json_text(query),) * 2,
    ).fetchall()
    for i, d1, d2 in got:
        assert_matches_reference("cosine_distance", d1, matrix[i], query)
        assert_matches_reference("cosine_distance", d2, query, matrix[i])


def test_same_constant_json_in_both_arguments(conn):
    text = json_text([3.0, 4.0])
    assert conn.execute("SELECT euclidean_distance(?1, ?1)", (text,)).fetchone() == (0.0,)
    assert conn.execute(
        "SELECT inner_product(?1, ?1) FROM (SELECT 1 UNION ALL SELECT 2)", (text,)
    ).fetchall() == [(25.0,), (25.0,)]


def test_known_values(conn):
    rows = conn.execute(
        """SELECT euclidean_distance('[1,2]', '[4,6]'),
                  euclidean_distance_squared('[1,2]', '[4,6]'),
                  cosine_distance('[1,0]', '[0,1]'),
                  cosine_distance('[1,1]', '[-1,-1]'),
                  euclidean_l2_distance('[3,0]', '[0,5]'),
                  inner_product('[1,2,3]', '[4,5,6]')"""
    ).fetchone()
    assert rows == pytest.approx((5.0, 25.0, 1.0, 2.0, 2**0.5, 32.0), abs=1e-7)
    assert conn.execute("SELECT typeof(euclidean_distance('[1]', '[1]'))").fetchone() == ("real",)


@pytest.mark.parametrize("dim", DIMS)
def test_vector_dims(conn, dim):
    v = np.arange(dim, dtype=np.float32)
    assert conn.execute(
        "SELECT vector_dims(?), vector_dims(?)", (blob(v), json_text(v))
    ).fetchone() == (dim, dim)


@pytest.mark.parametrize("dim", DIMS)
def test_json_round_trip(conn, dim):
    rng = np.random.default_rng(dim)
    v = (rng.standard_normal(dim) * 10.0 ** rng.integers(-30, 30, dim)).astype(np.float32)
    text, back = conn.execute(
        "SELECT vector_to_json(?1), vector_from_json(vector_to_json(?1))", (blob(v),)
    ).fetchone()
    assert back == blob(v)
    assert np.array_equal(np.array(json.loads(text), dtype=np.float32), v)
    assert " " not in text


def test_vector_to_json_writes_shortest_digits(conn):
    assert conn.execute("SELECT vector_to_json(?)", (blob([0.1, -2, 3.5e-08, 0]),)).fetchone() == (
        "[0.1,-2,3.5e-08,0]",
    )
    assert conn.execute("SELECT vector_to_json('[ 1.5 , 2e3 ]')").fetchone() == ("[1.5,2000]",)


def test_vector_from_json(conn):
    assert conn.execute("SELECT vector_from_json('[1, -2.5, 3e-2]')").fetchone() == (
        blob([1, -2.5, 3e-2]),
    )
    # A BLOB is checked and returned as it is.
    assert conn.execute("SELECT vector_from_json(?)", (blob([7]),)).fetchone() == (blob([7]),)
    assert conn.execute("SELECT typeof(vector_from_json('[1]'))").fetchone() == ("blob",)


def test_json_edge_values(conn):
    extremes = np.array([3.4028235e38, -3.4028235e38, 1.4e-45, -0.0, 1.17549435e-38], np.float32)
    (back,) = conn.execute(
        "SELECT vector_from_json(vector_to_json(?))", (blob(extremes),)
    ).fetchone()
    assert back == blob(extremes)  # -0.0 keeps its sign, denormals survive
    # Underflow to zero is not an error (only overflow is); whitespace is allowed.
    assert conn.execute("SELECT vector_from_json(' [1e-50 ,\n\t-0] ')").fetchone() == (
        blob([0.0, -0.0]),
    )


def test_infinity_is_returned_not_hidden(conn):
    """Infinite inputs give an infinite distance (not NaN): returned as such,
    identically on both paths."""
    inf = blob([np.inf, 0])
    assert conn.execute("SELECT euclidean_distance(?, ?)", (inf, blob([0, 0]))).fetchone() == (
        float("inf"),
    )


# ---------------------------------------------------------------------------
# Property tests (hypothesis), both paths on the same inputs.

REASONABLE = st.floats(-1e4, 1e4, width=32).filter(lambda x: x == 0 or abs(x) > 1e-4)
ANY_FINITE = st.floats(allow_nan=False, allow_infinity=False, width=32)


@st.composite
def vector_pair(draw, elements=REASONABLE):
    dim = draw(st.integers(1, 70))
    a = draw(hnp.arrays(np.float32, dim, elements=elements))
    b = draw(hnp.arrays(np.float32, dim, elements=elements))
    return a, b


PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY_SETTINGS
@given(vector_pair(), st.sampled_from(DISTANCE_FUNCTIONS))
def test_property_matches_numpy_on_both_paths(connections, pair, fn):
    a, b = pair
    if fn in ("cosine_distance", "euclidean_l2_distance") and (not a.any() or not b.any()):
        return  # zero norm: an error, tested in test_sql_errors.py
    results = set()
    for connection in connections.values():
        for enc_a, enc_b in ENCODINGS:
            (got,) = connection.execute(
                f"SELECT {fn}(?, ?)", (encode(a, enc_a), encode(b, enc_b))
            ).fetchone()
            assert_matches_reference(fn, got, a, b)
            results.add(got)
    # Same kernels, same float32 inputs: bit-identical whatever the path or encoding.
    assert len(results) == 1, results


@PROPERTY_SETTINGS
@given(vector_pair())
def test_property_metric_identities(connections, pair):
    a, b = pair
    for connection in connections.values():
        sql = (
            "SELECT euclidean_distance(?1, ?2), euclidean_distance(?2, ?1), "
            "euclidean_distance(?1, ?1)"
        )
        ab, ba, aa = connection.execute(sql, (blob(a), blob(b))).fetchone()
        assert ab == ba and aa == 0.0 and ab >= 0
        d2, d = connection.execute(
            "SELECT euclidean_distance_squared(?1, ?2), euclidean_distance(?1, ?2)",
            (blob(a), blob(b)),
        ).fetchone()
        assert d == pytest.approx(d2**0.5, rel=1e-6, abs=1e-30)
        if a.any() and b.any():
            c, scaled, self_c = connection.execute(
                "SELECT cosine_distance(?1, ?2), cosine_distance(?1, ?3), cosine_distance(?1, ?1)",
                (blob(a), blob(b), blob(b * np.float32(4))),  # power of 2: exact scaling
            ).fetchone()
            assert scaled == pytest.approx(c, abs=1e-6)
            assert 0 - 1e-6 <= c <= 2 + 1e-6
            assert self_c == pytest.approx(0, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 40), elements=ANY_FINITE))
def test_property_json_round_trip_is_exact(connections, v):
    for connection in connections.values():
        text, back = connection.execute(
            "SELECT vector_to_json(?1), vector_from_json(vector_to_json(?1))", (blob(v),)
        ).fetchone()
        assert back == blob(v)
        for token in text[1:-1].split(","):  # at most 9 significant digits
            assert len(token.lstrip("-").split("e")[0].replace(".", "").lstrip("0")) <= 9, token


# ---------------------------------------------------------------------------
# Loading paths


def test_paths_are_what_they_claim(connections):
    assert facevec.bindings.extension.is_native(connections["native"])
    assert not facevec.bindings.extension.is_native(connections["fallback"])


def test_load_on_a_connection_without_the_c_library_warns_once(monkeypatch):
    # A connection opened before facevec registered its functions, where the
    # connection cannot load extensions either: the Python fallback.
    monkeypatch.setattr(facevec.bindings.extension, "is_native", lambda conn: False)
    monkeypatch.setattr(facevec.bindings.extension, "can_load_extensions", lambda conn: False)
    monkeypatch.setattr(facevec.bindings.extension, "_warned", False)
    first = sqlite3.connect(":memory:")
    with pytest.warns(facevec.FallbackWarning, match="slower Python fallback"):
        facevec.load(first)
    second = sqlite3.connect(":memory:")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        facevec.load(second)  # no second warning
    for connection in (first, second):
        a, b = vector_pairs(17)[0]
        for fn in DISTANCE_FUNCTIONS:
            (got,) = connection.execute(f"SELECT {fn}(?, ?)", (blob(a), json_text(b))).fetchone()
            assert_matches_reference(fn, got, a, b)
        # A plain sqlite3 connection cannot carry facevec's message (documented in load()).
        with pytest.raises(
            sqlite3.OperationalError, match="user-defined function raised exception"
        ):
            connection.execute("SELECT vector_dims(1)")
        connection.close()


def test_load_on_an_extension_capable_connection_is_native():
    """Where sqlite3 loads extensions (pysqlite3 standing in for it, in a process of
    its own: one SQLite per process), load() loads the C library, silently."""
    pytest.importorskip("pysqlite3.dbapi2", reason="pysqlite3 stands in for such a sqlite3")
    code = (
        "import sys, warnings, pysqlite3.dbapi2; sys.modules['sqlite3'] = pysqlite3.dbapi2\n"
        "import sqlite3, facevec\n"
        "from facevec.bindings import extension\n"
        "warnings.simplefilter('error')\n"
        "conn = sqlite3.connect(':memory:')\n"
        "facevec.load(conn)\n"
        "print(extension.route(), extension.is_native(conn),\n"
        "      conn.execute(\"SELECT euclidean_distance('[0,0]', '[3,4]')\").fetchone()[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["load_extension", "True", "5.0"]


def test_connect_opens_a_file(tmp_path):
    for path in PATHS:
        database = tmp_path / f"{path}.db"
        connection = connect(path, str(database))
        connection.execute("CREATE TABLE t (v BLOB)")
        connection.execute("INSERT INTO t VALUES (?)", (blob([1, 2, 3]),))
        connection.commit()
        assert connection.execute("SELECT vector_dims(v) FROM t").fetchone() == (3,)
        connection.close()
        assert database.exists()


# ---------------------------------------------------------------------------
# Extremes: where float32 sums overflow or underflow, the result is still the
# float64 reference's (the kernels take such sums again in double).

#: (a, b) builders: elements far beyond sqrt(FLT_MAX) ~ 1.8e19 or below
#: sqrt(FLT_MIN) ~ 1.1e-19, opposite and random, and one huge vector against
#: a normal one.
EXTREME_SCALES = (1e20, 1e38, 1e-22, 1e-40)


def extreme_pairs(dim: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(dim)
    pairs = []
    for scale in EXTREME_SCALES:
        # |elements| <= 3 * scale: finite in float32 at every scale
        a = (np.clip(rng.standard_normal(dim), -3, 3) * scale).astype(np.float32)
        b = (np.clip(rng.standard_normal(dim), -3, 3) * scale).astype(np.float32)
        pairs.append((f"random {scale:g}", a, b))
        ones = np.full(dim, scale, np.float32)
        pairs.append((f"opposite {scale:g}", ones, -ones))
    normal = rng.standard_normal(dim).astype(np.float32)
    pairs.append(("huge and normal", (normal * 1e25).astype(np.float32), normal))
    pairs.append(("tiny and normal", (normal * 1e-30).astype(np.float32), normal))
    return [(name, a, b) for name, a, b in pairs if a.any() and b.any()]


@pytest.mark.parametrize("dim", (1, 3, 17, 128))
@pytest.mark.parametrize("fn", DISTANCE_FUNCTIONS)
def test_extreme_values_match_numpy(conn, fn, dim):
    for name, a, b in extreme_pairs(dim):
        (got,) = conn.execute(f"SELECT {fn}(?, ?)", (blob(a), blob(b))).fetchone()
        value, tol = reference(fn, a, b)
        assert abs(got - value) <= tol, f"{fn} {name}: got {got!r}, numpy {value!r}"


@pytest.mark.parametrize("scale", (1e19, 1e20, 3e38))
def test_euclidean_l2_of_opposite_huge_vectors_is_2(conn, scale):
    ones = np.full(128, scale, np.float32)
    (got,) = conn.execute(
        "SELECT euclidean_l2_distance(?, ?)", (blob(ones), blob(-ones))
    ).fetchone()
    assert got == pytest.approx(2.0, abs=1e-12)
    (got,) = conn.execute("SELECT cosine_distance(?, ?)", (blob(ones), blob(-ones))).fetchone()
    assert got == pytest.approx(2.0, abs=1e-12)


def test_a_tiny_vector_has_a_direction(conn):
    """Elements of 1e-30 square to 0 in float32: that is no zero norm."""
    tiny = blob([1e-30, 0, 0])
    assert conn.execute("SELECT cosine_distance(?, '[1, 0, 0]')", (tiny,)).fetchone() == (0.0,)
    assert conn.execute("SELECT euclidean_l2_distance(?, '[0, 2, 0]')", (tiny,)).fetchone()[
        0
    ] == pytest.approx(2**0.5, abs=1e-12)
