"""Smoke test of an installed facevec wheel (no checkout on the path, no deepface):
the compiled parts load, the SQL functions answer, vectors are added and found.

Run with the wheel's interpreter from outside the checkout:
    python .ci/wheel_smoke.py
"""

from __future__ import annotations

import platform
import sqlite3
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

import facevec
from facevec.bindings import _kernels, extension

SUFFIX = {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")


def main() -> None:
    site = Path(facevec.__file__).resolve().parent
    print(f"facevec {facevec.__version__} from {site}")
    assert "site-packages" in site.parts, f"facevec comes from {site}, not an installed wheel"
    assert Path(_kernels.__file__).parent == site / "bindings", _kernels.__file__

    # The loadable library, on the interpreter's own SQLite: loaded where its sqlite3
    # can load extensions, registered as an auto-extension on the library it links
    # where it cannot; elsewhere the same kernels through the fallback.
    library = Path(facevec.loadable_path() + SUFFIX)
    assert library.parent == site / "bindings" and library.is_file(), library
    route = extension.route()
    native = route != "fallback"
    if sys.platform == "linux" and platform.machine() == "x86_64":
        assert native, f"no native route on Linux x86-64: {extension._why_not_native}"
    with warnings.catch_warnings():
        warnings.simplefilter("error" if native else "ignore", facevec.FallbackWarning)
        conn = facevec.connect(":memory:", native=True if native else None)
    row = conn.execute(
        "SELECT facevec_version(), euclidean_distance('[0,0]', '[3,4]'), "
        "vector_dims(vector_from_json('[1,2,3]'))"
    ).fetchone()
    assert tuple(row) == (facevec.__version__, 5.0, 3), row
    conn.close()

    # The cffi kernels, on numpy arrays.
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((300, 128)).astype(np.float32)
    query = vectors[123] + np.float32(0.001)
    assert np.argmin(facevec.distances(query, vectors)) == 123

    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "faces.db"
        names = [f"img{i}.jpg" for i in range(len(vectors))]
        assert facevec.add(db, names, vectors, model_name="Dlib") == len(vectors)
        for strategy in ("extension", "knn", "client"):
            (frame,) = facevec.find(query, db, strategy=strategy, k=3, similarity_search=True)
            assert frame.img_name.iloc[0] == "img123.jpg", (strategy, frame)
        assert facevec.info(db)["faces"] == len(vectors)
        # The same file from the stdlib driver: the rows are plain SQLite.
        with sqlite3.connect(db) as plain:
            (count,) = plain.execute("SELECT count(*) FROM face_meta").fetchone()
        assert count == len(vectors)
    print(f"wheel smoke test ({route}): 1 passed, 0 failed")


if __name__ == "__main__":
    sys.exit(main())
