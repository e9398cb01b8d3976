"""The error contract of facevec's SQL functions (documented at the top of
csrc/sqlite3_facevec.c), case by case, through both loading paths: the exact
message, and the same message on both paths."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sqlpaths import DISTANCE_FUNCTIONS, PATHS, VECTOR_FUNCTIONS, blob, connect

import facevec
from facevec.bindings import fallback as sqlite_functions
from facevec.bindings.extension import dbapi_module

ROOT = Path(__file__).resolve().parent.parent
VALID = "'[1, 2, 3]'"  # a 3-d vector literal for the other argument


@pytest.fixture(scope="module", params=PATHS)
def conn(request, connections):
    return connections[request.param]


def error_of(connection, sql: str, params=()) -> str:
    with pytest.raises(Exception) as info:
        connection.execute(sql, params).fetchall()
    # sqlite3.OperationalError or pysqlite3.dbapi2.OperationalError
    assert type(info.value).__name__ == "OperationalError", repr(info.value)
    return str(info.value)


def assert_error(connections, sql: str, message: str, params=()) -> None:
    """sql fails with exactly ``message`` on every path."""
    for path, connection in connections.items():
        got = error_of(connection, sql, params)
        assert re.fullmatch(re.escape(message), got), f"{path}: {got!r} != {message!r}"


# ---------------------------------------------------------------------------
# Invalid vector arguments, for every function and argument position.

# (SQL literal, message after "<fn>: argument <n>")
BAD_VECTORS = [
    ("1", " must be a float32 vector BLOB or a JSON array TEXT, found INTEGER"),
    ("-7", " must be a float32 vector BLOB or a JSON array TEXT, found INTEGER"),
    ("1.5", " must be a float32 vector BLOB or a JSON array TEXT, found REAL"),
    ("x''", " is an empty BLOB, expected float32 values"),
    ("zeroblob(0)", " is an empty BLOB, expected float32 values"),
    ("x'00'", ": invalid float32 vector BLOB length, must be divisible by 4, found 1 bytes"),
    ("x'0000'", ": invalid float32 vector BLOB length, must be divisible by 4, found 2 bytes"),
    ("x'000000'", ": invalid float32 vector BLOB length, must be divisible by 4, found 3 bytes"),
    (
        "zeroblob(13)",
        ": invalid float32 vector BLOB length, must be divisible by 4, found 13 bytes",
    ),
    (
        "zeroblob(514)",
        ": invalid float32 vector BLOB length, must be divisible by 4, found 514 bytes",
    ),
    ("'[]'", " is an empty JSON array"),
    ("' [ \n] '", " is an empty JSON array"),
    ("'[1, 1e39]'", ": number out of float32 range at character 4"),
    ("'[-3.5e38]'", ": number out of float32 range at character 1"),
]

# Malformed JSON: (text, byte offset of the problem).
MALFORMED_JSON = [
    ("", 0),
    (" ", 1),
    ("abc", 0),
    ("1", 0),
    ('{"a": 1}', 0),
    ("[", 1),
    ("[1,2", 4),
    ("[1,,2]", 3),
    ("[1,2,]", 5),
    ("[,1]", 1),
    ("[1 2]", 3),
    ("[1,2] x", 6),
    ("[1] []", 4),
    ("[[1]]", 1),
    ('["1"]', 1),
    ("[true]", 1),
    ("[null]", 1),
    ("[NaN]", 1),
    ("[Infinity]", 1),
    ("[-Infinity]", 1),
    ("[01]", 2),
    ("[1.]", 1),
    ("[.5]", 1),
    ("[+1]", 1),
    ("[1e]", 1),
    ("[1e+]", 1),
    ("[--1]", 1),
    ("[0x10]", 2),
    ("[1;2]", 2),
]

CASES = []
for fn in DISTANCE_FUNCTIONS:
    for argno in (1, 2):
        for literal, tail in BAD_VECTORS:
            args = (literal, VALID) if argno == 1 else (VALID, literal)
            CASES.append((f"SELECT {fn}({args[0]}, {args[1]})", f"{fn}: argument {argno}{tail}"))
for fn in VECTOR_FUNCTIONS:
    for literal, tail in BAD_VECTORS:
        CASES.append((f"SELECT {fn}({literal})", f"{fn}: argument 1{tail}"))


@pytest.mark.parametrize(("sql", "message"), CASES)
def test_invalid_vector_argument(connections, sql, message):
    assert_error(connections, sql, message)


@pytest.mark.parametrize(("text", "position"), MALFORMED_JSON)
@pytest.mark.parametrize("fn", DISTANCE_FUNCTIONS + VECTOR_FUNCTIONS)
def test_malformed_json(connections, fn, text, position):
    malformed = f": malformed JSON array of numbers at character {position}"
    if fn in DISTANCE_FUNCTIONS:
        assert_error(
            connections, f"SELECT {fn}(?, {VALID})", f"{fn}: argument 1{malformed}", (text,)
        )
        assert_error(
            connections, f"SELECT {fn}({VALID}, ?)", f"{fn}: argument 2{malformed}", (text,)
        )
    else:
        assert_error(connections, f"SELECT {fn}(?)", f"{fn}: argument 1{malformed}", (text,))


def test_json_text_with_trailing_nul(connections):
    assert_error(
        connections,
        "SELECT vector_dims(cast(x'5b315d00' AS TEXT))",
        "vector_dims: argument 1: malformed JSON array of numbers at character 3",
    )


@pytest.mark.parametrize("path", PATHS)
def test_json_text_that_is_not_utf8(connections, path):
    got = error_of(connections[path], "SELECT vector_dims(cast(x'5b31ff5d' AS TEXT))")
    if path == "fallback":
        # Python's sqlite3 cannot decode such TEXT, so it never calls the function
        # and words the error itself (the README says so).
        assert got == "user-defined function raised exception"
    else:
        assert got == "vector_dims: argument 1: malformed JSON array of numbers at character 2"


@pytest.mark.parametrize("path", PATHS)
def test_json_number_of_any_length(connections, path):
    """A valid JSON number is a valid JSON number, however many digits it has."""
    for digits in (60, 63, 64, 70, 5000):
        numbers = ["1", f"0.{'1' * digits}", f"-{'2' * digits}e-{digits}"]
        text = "[" + ", ".join(numbers) + "]"
        (back,) = connections[path].execute("SELECT vector_from_json(?)", (text,)).fetchone()
        assert back == blob([float(x) for x in numbers])


@pytest.mark.parametrize("fn", DISTANCE_FUNCTIONS)
def test_different_dimensions(connections, fn):
    message = f"{fn}: vectors have different dimensions: 3 and 2"
    assert_error(connections, f"SELECT {fn}('[1,2,3]', '[1,2]')", message)
    assert_error(connections, f"SELECT {fn}(?, '[1,2]')", message, (blob([1, 2, 3]),))
    assert_error(connections, f"SELECT {fn}(?, ?)", message, (blob([1, 2, 3]), blob([1, 2])))
    assert_error(
        connections,
        f"SELECT {fn}('[1]', ?)",
        f"{fn}: vectors have different dimensions: 1 and 512",
        (blob(np.ones(512)),),
    )


@pytest.mark.parametrize("fn", ("cosine_distance", "euclidean_l2_distance"))
def test_zero_norm(connections, fn):
    message = f"{fn}: undefined for a vector whose norm is 0"
    for args in (("'[0,0]'", "'[1,2]'"), ("'[1,2]'", "'[0,0]'"), ("'[0,-0]'", "'[0,0]'")):
        assert_error(connections, f"SELECT {fn}({args[0]}, {args[1]})", message)
    assert_error(
        connections, f"SELECT {fn}(?, ?)", message, (blob(np.zeros(33)), blob(np.ones(33)))
    )


@pytest.mark.parametrize(
    "fn", ("euclidean_distance", "euclidean_distance_squared", "inner_product")
)
def test_zero_vectors_are_fine_for_the_other_metrics(connections, fn):
    for connection in connections.values():
        assert connection.execute(f"SELECT {fn}('[0,0]', '[0,0]')").fetchone() == (0.0,)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([math.nan, 1.0], [1.0, 1.0]),
        ([1.0, 1.0], [1.0, math.nan]),
        ([math.nan] * 33, [math.nan] * 33),
    ],
)
@pytest.mark.parametrize("fn", DISTANCE_FUNCTIONS)
def test_nan_is_an_error(connections, fn, a, b):
    message = f"{fn}: result is NaN: a vector holds NaN or infinity"
    assert_error(connections, f"SELECT {fn}(?, ?)", message, (blob(a), blob(b)))


@pytest.mark.parametrize(
    ("fn", "a", "b"),
    [
        ("euclidean_distance", [math.inf], [math.inf]),  # inf - inf
        ("euclidean_distance_squared", [-math.inf, 0], [-math.inf, 0]),
        ("inner_product", [math.inf, 0], [0, 1]),  # inf * 0
        ("cosine_distance", [math.inf, 1], [1, 1]),
        ("euclidean_l2_distance", [1, 1], [1, math.inf]),
    ],
)
def test_infinity_giving_nan_is_an_error(connections, fn, a, b):
    message = f"{fn}: result is NaN: a vector holds NaN or infinity"
    assert_error(connections, f"SELECT {fn}(?, ?)", message, (blob(a), blob(b)))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([math.nan], "vector_to_json: element 0 is NaN, which JSON cannot represent"),
        ([1, 2, math.inf], "vector_to_json: element 2 is infinite, which JSON cannot represent"),
        ([0, -math.inf], "vector_to_json: element 1 is infinite, which JSON cannot represent"),
    ],
)
def test_vector_to_json_of_non_finite(connections, values, message):
    assert_error(connections, "SELECT vector_to_json(?)", message, (blob(values),))


def test_first_bad_argument_is_reported(connections):
    assert_error(
        connections,
        "SELECT euclidean_distance(1, x'00')",
        "euclidean_distance: argument 1 must be a float32 vector BLOB or a JSON array TEXT, "
        "found INTEGER",
    )


def test_error_on_a_later_row(connections):
    for connection in connections.values():
        connection.execute("DROP TABLE IF EXISTS mixed")
        connection.execute("CREATE TABLE mixed (id INTEGER PRIMARY KEY, v)")
        connection.executemany(
            "INSERT INTO mixed VALUES (?, ?)", [(1, blob([1, 2])), (2, blob([3, 4])), (3, "[1,")]
        )
    assert_error(
        connections,
        "SELECT id, euclidean_distance(v, '[0,0]') FROM mixed ORDER BY id",
        "euclidean_distance: argument 1: malformed JSON array of numbers at character 3",
    )


# ---------------------------------------------------------------------------
# NULL gives NULL, before any other check.


NULL_CASES = [f"SELECT {fn}(NULL, {VALID})" for fn in DISTANCE_FUNCTIONS]
NULL_CASES += [f"SELECT {fn}({VALID}, NULL)" for fn in DISTANCE_FUNCTIONS]
NULL_CASES += [f"SELECT {fn}(NULL, NULL)" for fn in DISTANCE_FUNCTIONS]
NULL_CASES += [f"SELECT {fn}(NULL, 1)" for fn in DISTANCE_FUNCTIONS]  # NULL wins over a bad type
NULL_CASES += [f"SELECT {fn}(x'00', NULL)" for fn in DISTANCE_FUNCTIONS]
NULL_CASES += [f"SELECT {fn}(NULL)" for fn in VECTOR_FUNCTIONS]
NULL_CASES += ["SELECT sqrt(NULL)"]


@pytest.mark.parametrize("sql", NULL_CASES)
def test_null_gives_null(conn, sql):
    assert conn.execute(sql).fetchone() == (None,)


def test_null_from_a_column(conn):
    assert conn.execute(
        "SELECT euclidean_distance(v, '[1]') FROM (SELECT NULL AS v UNION ALL SELECT '[4]')"
    ).fetchall() == [(None,), (3.0,)]


# ---------------------------------------------------------------------------
# sqrt, facevec_version, the function list


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("4", 2.0),
        ("2.25", 1.5),
        ("0", 0.0),
        ("-1", None),
        ("-0.5", None),
        ("'9'", 3.0),
        ("' 16 '", 4.0),
        ("'6.25'", 2.5),
        ("'abc'", None),
        ("'4abc'", None),
        ("''", None),
        ("'-4'", None),
        ("x'34'", None),
        ("9223372036854775807", math.sqrt(9223372036854775807)),
        ("1e308", 1e154),
    ],
)
def test_sqrt(conn, arg, expected):
    (got,) = conn.execute(f"SELECT sqrt({arg})").fetchone()
    assert got == expected
    assert conn.execute(f"SELECT typeof(sqrt({arg}))").fetchone() == (
        "null" if expected is None else "real",
    )


@pytest.mark.parametrize(
    "text", ["'inf'", "'nan'", "'1_0'", "'\uff14'", "'0x10'", "'-0'", "'-0.0'", "' 4 '", "'1e2'"]
)
def test_sqrt_of_text_agrees_on_both_paths(connections, text):
    native, fallback = (
        connections[p].execute(f"SELECT sqrt({text}), typeof(sqrt({text}))").fetchone()
        for p in PATHS
    )
    assert repr(native) == repr(fallback)  # repr: tells 0.0 from -0.0


@pytest.mark.parametrize("path", PATHS)
def test_dbapi_module_gives_the_connection_errors(connections, path):
    connection = connections[path]
    module = dbapi_module(connection)
    with pytest.raises(module.OperationalError):
        connection.execute("SELECT vector_dims(1)")


def test_version(conn):
    """One version constant, facevec/_version.py: setup.py hands it to the C
    compiler, and the header's own is only a fallback for ad-hoc builds."""
    (written,) = re.findall(
        r'^__version__ = "([^"]+)"$', (ROOT / "facevec" / "_version.py").read_text(), re.M
    )
    assert conn.execute("SELECT facevec_version()").fetchone() == (written,)
    assert written == facevec.__version__ == sqlite_functions.VERSION
    header = (ROOT / "csrc" / "facevec.h").read_text()
    assert re.findall(r'#define FACEVEC_VERSION "([^"]+)"', header) == ["unknown"]


def function_list(connection) -> Counter[tuple[str, int, int]]:
    # A multiset: facevec's sqrt may sit next to SQLite's own, with the same flags.
    return Counter(connection.execute("SELECT name, narg, flags FROM pragma_function_list"))


def registered_by_facevec(path: str) -> Counter[tuple[str, int, int]]:
    """Functions a connection has with facevec that a plain one lacks. The plain one
    is opened by an interpreter that never imported facevec: in this one, facevec's
    auto-extension may give every new connection its functions."""
    plain = connect(path)
    module = "sqlite3" if path == "fallback" else dbapi_module(plain).__name__
    code = (
        f"import json, {module} as m; print(json.dumps(m.connect(':memory:')"
        ".execute('SELECT name, narg, flags FROM pragma_function_list').fetchall()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before = Counter(tuple(row) for row in json.loads(out.stdout))
    return function_list(plain) - before


def test_registered_functions_are_the_same_on_both_paths():
    native = registered_by_facevec("native")
    fallback = registered_by_facevec("fallback")
    expected = {(name, nargs) for name, (nargs, _) in sqlite_functions.FUNCTIONS.items()}
    assert {name for name, _ in expected} >= set(DISTANCE_FUNCTIONS + VECTOR_FUNCTIONS)
    # The knn functions (csrc/knn_*.c) need a virtual table, which the fallback cannot offer.
    # (On the auto_extension route the fallback's connection has them too, from C.)
    native, fallback = (
        Counter({row: n for row, n in found.items() if not row[0].startswith("facevec_knn")})
        for found in (native, fallback)
    )
    assert sorted((name, narg) for name, narg, _ in native.elements()) == sorted(expected)
    assert sorted((name, narg) for name, narg, _ in fallback.elements()) == sorted(expected)
    deterministic, innocuous = 0x800, 0x200000
    for name, _, flags in native:
        assert flags & deterministic and flags & innocuous, name
    for name, _, flags in fallback:  # Python's create_function cannot mark innocuous
        assert flags & deterministic, name
