"""serve --knn-cache-mib: the budget of the knn chunks the server keeps in memory."""

from __future__ import annotations

import numpy as np
import pytest

import facevec
from facevec import knn

pytest.importorskip("fastapi")


def gallery(tmp_path):
    db = tmp_path / "g.db"
    vectors = np.random.default_rng(3).normal(size=(40, 128)).astype(np.float32)
    facevec.add(db, [f"p{i}.jpg" for i in range(40)], vectors, people=False)
    return db


def budget(db) -> int:
    conn = facevec.connect(db, native=True)
    try:
        return knn.cache_size(conn)
    finally:
        conn.close()


def test_the_server_sets_the_process_budget(tmp_path):
    from facevec.web import create_app

    db = gallery(tmp_path)
    before = budget(db)
    try:
        create_app(db, knn_cache_bytes=64 << 20, embed_workers=0)
        assert budget(db) == 64 << 20  # a later connection of the process sees it
        create_app(db, knn_cache_bytes=0, embed_workers=0)
        assert budget(db) == 0
    finally:
        conn = facevec.connect(db, native=True)
        knn.cache_size(conn, before)
        conn.close()


def test_serve_takes_the_budget_in_mib_from_the_option_or_the_environment():
    from click.testing import CliRunner

    from facevec.cli.main import cli

    text = CliRunner().invoke(cli, ["serve", "--help"]).output
    assert "--knn-cache-mib" in text
    refused = CliRunner().invoke(cli, ["serve", "--knn-cache-mib", "-1", "--db", "x.db"])
    assert refused.exit_code != 0 and "--knn-cache-mib" in refused.output
