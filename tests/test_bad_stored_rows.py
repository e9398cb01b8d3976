"""A gallery that already holds a bad row (an older version or another program wrote
it: NaN, infinity, all zeros, another size) is still searchable: every strategy and
metric leaves out the rows whose distance is undefined, names them, and answers as
a search of the good rows would; IVF lists train around them, ``people cluster``
leaves them out, ``info`` names them."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from backends import BACKENDS, STRATEGIES, fresh_database
from click.testing import CliRunner

import facevec
from facevec.cli import cli
from facevec.errors import SkippedFacesWarning
from facevec.metrics import FACE_METRICS
from facevec.storage.database import open_database

DIM = 16
N = 40


def poisons(backend: str) -> dict[str, np.ndarray | None]:
    """img_name -> the vector written over it (None: 12 bytes, another size). MariaDB's
    DOUBLE holds no NaN nor infinity; SQLite's REAL no NaN (the blob alone, then)."""
    found: dict[str, np.ndarray | None] = {"p5": np.zeros(DIM, np.float32), "p9": None}
    if backend != "mysql":
        found["p7"] = np.full(DIM, np.inf, np.float32)
        found["p3"] = np.full(DIM, np.nan, np.float32)
    return found


def poison(db, backend: str) -> None:
    with open_database(db) as database, database.transaction():
        for name, vector in poisons(backend).items():
            (face_id,) = database.query("SELECT id FROM face_meta WHERE img_name = {p}", (name,))[0]
            blob = bytes(12) if vector is None else vector.tobytes()
            database.execute("UPDATE face_meta SET embedding = {p} WHERE id = {p}", (blob, face_id))
            database.execute("DELETE FROM face_embeddings WHERE face_id = {p}", (face_id,))
            if vector is not None and not (backend == "sqlite" and np.isnan(vector).any()):
                database.executemany(
                    "INSERT INTO face_embeddings (face_id, dimension, value)"
                    " VALUES ({p}, {p}, {p})",
                    [(face_id, d, float(v)) for d, v in enumerate(vector)],
                )


@pytest.fixture(params=BACKENDS)
def poisoned(request, tmp_path):
    backend = request.param
    vectors = np.random.default_rng(4).normal(size=(N, DIM)).astype(np.float32)
    with fresh_database(backend, tmp_path) as db:
        facevec.add(db, [f"p{i}" for i in range(N)], vectors)
        poison(db, backend)
        yield backend, db, vectors


def undefined_rows(backend: str, metric: str) -> set[str]:
    """The bad rows whose distance is undefined under the metric (the zero row has a
    euclidean distance)."""
    bad = poisons(backend)
    undefined = {n for n, v in bad.items() if v is None or not np.isfinite(v).all()}
    return undefined if metric == "euclidean" else undefined | {"p5"}


def reference(vectors: np.ndarray, backend: str, metric: str, query: np.ndarray, k: int):
    """The k nearest good rows by the kernels, and undefined_rows."""
    bad = poisons(backend)
    undefined = undefined_rows(backend, metric)
    rows = [i for i in range(N) if f"p{i}" not in undefined]
    matrix = np.stack([bad.get(f"p{i}", vectors[i]) for i in rows])
    distances = facevec.distances(query, matrix, metric)
    order = np.argsort(distances, kind="stable")[:k]
    return [f"p{rows[i]}" for i in order], distances[order], undefined


@pytest.mark.parametrize("metric", FACE_METRICS)
def test_every_strategy_leaves_out_and_names_rows_whose_distance_is_undefined(poisoned, metric):
    backend, db, vectors = poisoned
    query = vectors[10]
    names, distances, undefined = reference(vectors, backend, metric, query, k=5)
    for strategy in STRATEGIES[backend]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (frame,) = facevec.find(
                query, db, strategy=strategy, distance_metric=metric, k=5, similarity_search=True
            )
        assert list(frame.img_name) == names, strategy
        np.testing.assert_allclose(frame.distance, distances, atol=1e-5, err_msg=strategy)
        skipped = {row["img_name"]: row["reason"] for row in frame.attrs["skipped"]}
        if strategy == "relational":
            # It reads face_embeddings (p9 has no rows there), ranked by the database: a
            # NaN it sorts last and past k is never reached.
            assert set(skipped) <= undefined, skipped
        else:
            assert set(skipped) == undefined, (strategy, skipped)
            assert skipped["p9"] == "is 12 bytes, not 16 float32 values (64 bytes)"
        said = [str(w.message) for w in caught if w.category is SkippedFacesWarning]
        assert len(said) == (1 if skipped else 0), said
        assert all(f"('{name}', face 0)" in said[0] for name in skipped)


def test_ivf_lists_train_around_bad_rows_and_probed_searches_skip_them(poisoned):
    backend, db, vectors = poisoned
    for metric in ("euclidean", "cosine"):
        facevec.train_lists(db, 4, metric=metric, progress=False)
        status = facevec.list_status(db)
        assert status["faces"] == N and status["unassigned"] >= len(poisons(backend)) - 1
        names, _, _ = reference(vectors, backend, metric, vectors[10], k=5)
        for strategy in ("relational", "client"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SkippedFacesWarning)
                (frame,) = facevec.find(
                    vectors[10],
                    db,
                    strategy=strategy,
                    distance_metric=metric,
                    k=5,
                    nprobe=4,
                    similarity_search=True,
                )
            assert list(frame.img_name) == names, (metric, strategy)


def test_people_cluster_leaves_out_and_names_bad_rows(poisoned):
    backend, db, _ = poisoned
    with pytest.warns(SkippedFacesWarning, match="left out of clustering"):
        report = facevec.people.cluster(db, distance_metric="cosine", progress=False)
    undefined = undefined_rows(backend, "cosine")
    assert len(report.skipped) == len(undefined)
    assert report.faces == N - len(undefined)


def test_info_names_every_row_facevec_would_not_store(poisoned):
    backend, db, _ = poisoned
    found = {row["img_name"]: row["reason"] for row in facevec.info(db)["invalid_faces"]}
    assert set(found) == set(poisons(backend))
    assert found["p5"].startswith("is all zeros")
    result = CliRunner().invoke(cli, ["info", "--db", db])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("invalid_faces:"))
    assert re.search(r"invalid_faces: \d that facevec would not store today: face \d+ \('p", line)
