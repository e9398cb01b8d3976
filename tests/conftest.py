"""Shared fixtures of the face pipeline tests.

Embedding a photo takes 0.3-8 s here, so the indexed gallery is built once per
session and shared; tests that change a database work on a copy of it.

The gallery fixtures read the larger photo set (pipeline_photos): a test that uses
one is marked ``photo_set``, and skips, saying where the set comes from, when it is
not there. ``pytest -m "not photo_set"`` leaves them out.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from pathlib import Path

import pytest
from backends import BACKENDS, fresh_database
from pipeline_photos import FACES, GALLERY_LAYOUT, LABELS, PHOTO_NAMES, photo, why_no_photo_set
from sqlpaths import PATHS, connect

#: The fixtures that read the larger photo set, and through them every test using them.
PHOTO_SET_FIXTURES = {"gallery", "photos", "gallery_maker", "all_photos_db"}
#: Tests on the larger set (galleries take minutes to embed) or on Spark (a JVM per
#: session) are slow; other slow tests carry the marker where they are written.
SLOW_FIXTURES = {"spark"}


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    why = why_no_photo_set()
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        if uses & PHOTO_SET_FIXTURES or item.get_closest_marker("photo_set"):
            item.add_marker(pytest.mark.photo_set)
            item.add_marker(pytest.mark.slow)
            if why:
                item.add_marker(pytest.mark.skip(reason=why))
        elif uses & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)


def _needs_deepface() -> None:
    pytest.importorskip("deepface", reason="deepface is not installed (pip install '.[deepface]')")
    why = why_no_photo_set()
    if why:
        pytest.skip(why)


@pytest.fixture(scope="session")
def labels() -> dict[str, str]:
    """The identities of the labelled photos of the larger set (tests/photo_set.csv)."""
    return dict(LABELS)


@pytest.fixture(scope="session", autouse=True)
def deepface_home(tmp_path_factory: pytest.TempPathFactory):
    """An empty DEEPFACE_HOME, so every run proves facevec places the Dlib weights."""
    home = tmp_path_factory.mktemp("deepface_home")
    previous = os.environ.get("DEEPFACE_HOME")
    os.environ["DEEPFACE_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("DEEPFACE_HOME", None)
    else:
        os.environ["DEEPFACE_HOME"] = previous


def make_gallery(root: Path, layout: dict[str, list]) -> Path:
    """A gallery of symlinks to the shared photos (never copies), person folders included."""
    for person, names in layout.items():
        folder = root / person if person else root
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            (folder / name).symlink_to(FACES / name)
    return root


@pytest.fixture(scope="session")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _needs_deepface()
    return make_gallery(tmp_path_factory.mktemp("gallery") / "gallery", GALLERY_LAYOUT)


@pytest.fixture(scope="session")
def indexed(gallery: Path, tmp_path_factory: pytest.TempPathFactory):
    """(database path, index report) of the gallery; read-only for tests. Its person
    folders are people and no people step ran: the faces outside them have no person
    (tests/test_people_keep_current.py tests the step)."""
    import facevec

    db = tmp_path_factory.mktemp("db") / "gallery.db"
    report = facevec.index(gallery, db, progress=False, people_from_folders=True, people=False)
    return db, report


@pytest.fixture(scope="session")
def gallery_db(indexed) -> Path:
    return indexed[0]


@pytest.fixture(scope="session", params=BACKENDS)
def gallery_on(request, gallery_db, tmp_path_factory):
    """(backend, db) holding the session's indexed gallery: the SQLite file itself,
    or its vectors copied (not re-embedded) into a database on each server."""
    import facevec
    from facevec.transfer import copy_gallery

    backend = request.param
    if backend == "sqlite":
        yield backend, str(gallery_db)
        return
    with fresh_database(backend, tmp_path_factory.mktemp(backend)) as url:
        copied = copy_gallery(gallery_db, url)
        assert copied["faces"] == facevec.info(gallery_db)["faces"]
        yield backend, url


@pytest.fixture
def gallery_db_copy(gallery_db: Path, tmp_path: Path) -> Path:
    """A private copy of the indexed gallery, for tests that change it."""
    copy = tmp_path / "copy.db"
    source = sqlite3.connect(gallery_db)
    target = sqlite3.connect(copy)
    source.backup(target)
    source.close()
    target.close()
    return copy


@pytest.fixture(scope="session")
def photos():
    """photos(name) -> path of a shared test photo."""
    _needs_deepface()
    return photo


@pytest.fixture(scope="session")
def gallery_maker():
    """gallery_maker(root, {person: [photo names]}) -> a symlink gallery at root."""
    return make_gallery


@pytest.fixture(scope="module")
def connections():
    """{path: connection} for each way of loading the SQL functions (sqlpaths.PATHS)."""
    opened = {path: connect(path) for path in PATHS}
    yield opened
    for connection in opened.values():
        connection.close()


@pytest.fixture(scope="session")
def all_photos_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every shared photo in one folder, indexed once: labels hidden (no person folders)."""
    import facevec

    _needs_deepface()
    names = sorted(PHOTO_NAMES)
    root = make_gallery(tmp_path_factory.mktemp("all_photos") / "photos", {"": names})
    db = tmp_path_factory.mktemp("all_photos_db") / "all.db"
    facevec.index(root, db, progress=False, people=False)  # faces for people cluster
    return db


@pytest.fixture
def gallery_copy_on(tmp_path: Path):
    """gallery_copy_on(sqlite_db, backend) -> a private copy of a SQLite gallery on
    `backend` (the file copied, or its vectors copied to a fresh server database)."""
    from facevec.transfer import copy_gallery

    with contextlib.ExitStack() as stack:

        def make(source: Path, backend: str) -> str:
            if backend == "sqlite":
                copy = tmp_path / f"copy-{uuid.uuid4().hex[:8]}.db"
                src, dst = sqlite3.connect(source), sqlite3.connect(copy)
                src.backup(dst)
                src.close()
                dst.close()
                return str(copy)
            url = stack.enter_context(fresh_database(backend, tmp_path))
            copy_gallery(source, url)
            return url

        yield make


@pytest.fixture(scope="session")
def spark():
    """One local[2] SparkSession for every Spark test (starting one takes seconds)."""
    import shutil

    pytest.importorskip("pyspark", reason="pyspark is not installed (pip install '.[spark]')")
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java 17+ on PATH (Debian: default-jre-headless)")
    from facevec.spark.session import spark_session

    settings = {"spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false"}
    session = spark_session("local[2]", "facevec tests", settings, progress=False)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
