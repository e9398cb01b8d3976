"""Loading a server: facevec's add, copy and import beside the database's own bulk load.

The same face_meta rows (clustered synthetic 128-d faces, tests/ivf_data.py, one
face per image, blobs only, no lists) are loaded four ways into four fresh
schemas/databases of one server, in one run:

- the database's own bulk load: PostgreSQL ``COPY face_meta FROM STDIN`` of a text
  file written beforehand, MariaDB ``LOAD DATA LOCAL INFILE`` of a file written
  beforehand (writing the files is not timed: only the server's load is);
- ``facevec.add`` of the numpy vectors (its people step off: that is grouping, not
  loading, and is timed apart with ``--people``);
- ``facevec.copy_gallery`` of the natively loaded gallery into an empty one;
- ``facevec.import_parquet`` of that gallery exported to Parquet (export not timed).

Each facevec path is printed as a ratio of the native load (target <= 2x), with
the process's CPU time (every thread) and the load average. ``--profile`` profiles
the calling thread: the writes, in facevec's background writer thread, show there
as the time spent waiting for them. Every schema/database made here is
dropped afterwards.

    python benchmarks/bench_bulk.py [--sizes 100000,1000000] [--servers postgresql,mysql]
        [--paths add,copy,import] [--people] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
import uuid
from urllib.parse import urlsplit

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from ivf_data import grouped_faces  # noqa: E402

import facevec  # noqa: E402
from facevec.storage import lists as store  # noqa: E402
from facevec.storage import schema  # noqa: E402
from facevec.storage.database import connect_url, open_database  # noqa: E402
from facevec.transfer import copy_gallery, export_parquet, import_parquet  # noqa: E402

URLS = {
    "postgresql": os.environ.get(
        "FACEVEC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("FACEVEC_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
}
MODEL = "Dlib"


class Server:
    """Fresh schemas (PostgreSQL) or databases (MariaDB) of one server, dropped at the end."""

    def __init__(self, server: str):
        self.server = server
        self.made: list[str] = []
        self.admin, _, _ = connect_url(URLS[server])
        if server == "postgresql":
            self.admin.autocommit = True
        else:
            self.admin.autocommit(True)

    def fresh(self, dimensions: int) -> tuple[str, str]:
        """(name, url) of a new empty gallery, blobs only."""
        name = f"facevec_bulk_{uuid.uuid4().hex[:10]}"
        kind = "SCHEMA" if self.server == "postgresql" else "DATABASE"
        self.admin.cursor().execute(f"CREATE {kind} {name}")
        self.made.append(name)
        base = URLS[self.server]
        if self.server == "postgresql":
            url = f"{base}?options=-csearch_path%3D{name}"
        else:
            url = urlsplit(base)._replace(path=f"/{name}").geturl()
        with open_database(url) as db:
            schema.create_schema(db)
            schema.ensure_collection(db, MODEL, dimensions, None)
            with db.transaction():
                store.set_embedding_rows(db, False)
        return name, url

    def drop(self, name: str) -> None:
        kind = "SCHEMA" if self.server == "postgresql" else "DATABASE"
        cascade = " CASCADE" if self.server == "postgresql" else ""
        self.admin.cursor().execute(f"DROP {kind} IF EXISTS {name}{cascade}")
        self.made.remove(name)

    def close(self) -> None:
        for name in list(self.made):
            self.drop(name)
        self.admin.close()


def _rows_file(folder: str, vectors: np.ndarray, server: str) -> str:
    """The face_meta rows facevec writes, as the server's bulk-load text file."""
    stamp = schema.now()
    path = os.path.join(folder, f"face_meta-{server}.tsv")
    hexes = vectors.astype("<f4").tobytes().hex()
    width = 8 * vectors.shape[1]
    # PostgreSQL's text COPY reads bytea as \x<hex> (the backslash itself escaped);
    # MariaDB's LOAD DATA gets the hex and UNHEX()es it.
    prefix = "\\\\x" if server == "postgresql" else ""
    nulls = "\\N\t" * 8
    with open(path, "w") as out:
        for start in range(0, len(vectors), 10000):
            out.write(
                "".join(
                    f"{row + 1}\t{row}.jpg\t0\t{prefix}{hexes[row * width : (row + 1) * width]}"
                    f"\t{MODEL}\t{nulls}0.0\t{stamp}\n"
                    for row in range(start, min(start + 10000, len(vectors)))
                )
            )
    return path


_NATIVE_COLUMNS = (
    "id, img_name, face_index, {embedding}, model_name, facial_area_x, facial_area_y,"
    " facial_area_w, facial_area_h, left_eye_x, left_eye_y, right_eye_x, right_eye_y,"
    " face_confidence, created_at"
)


def _native_load(server: str, name: str, url: str, path: str, n: int) -> float:
    """Seconds of the server's own bulk load of `path` into `name`."""
    if server == "postgresql":
        with open_database(url) as db:
            cursor = db.conn.cursor()
            t0 = time.perf_counter()
            columns = _NATIVE_COLUMNS.format(embedding="embedding")
            with (
                open(path, "rb") as source,
                cursor.copy(f"COPY face_meta ({columns}) FROM STDIN") as copy,
            ):
                while block := source.read(1 << 20):
                    copy.write(block)
            cursor.execute("SELECT setval(pg_get_serial_sequence('face_meta', 'id'), %s)", (n,))
            db.commit()
            return time.perf_counter() - t0
    import pymysql

    parts = urlsplit(URLS["mysql"])
    conn = pymysql.connect(
        host=parts.hostname,
        port=parts.port or 3306,
        user=parts.username,
        password=parts.password or "",
        database=name,
        local_infile=True,
        autocommit=True,
    )
    try:
        t0 = time.perf_counter()
        conn.cursor().execute(
            f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE face_meta"
            f" ({_NATIVE_COLUMNS.format(embedding='@hex')}) SET embedding = UNHEX(@hex)"
        )
        return time.perf_counter() - t0
    finally:
        conn.close()


def _timed(what, profile: bool) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of what()."""
    profiler = cProfile.Profile() if profile else None
    t0, c0 = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    what()
    if profiler:
        profiler.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if profiler:
        pstats.Stats(profiler).sort_stats(os.environ.get("BULK_SORT", "tottime")).print_stats(
            int(os.environ.get("BULK_LINES", "12"))
        )
    return wall, cpu


def _count(url: str) -> int:
    with open_database(url) as db:
        return int(db.scalar("SELECT COUNT(*) FROM face_meta"))


def run(server: str, n: int, paths: list[str], people: bool, profile: bool) -> None:
    vectors, _ = grouped_faces(n, seed=7, groups=max(16, int(n**0.5) // 4))
    names = [f"{row}.jpg" for row in range(n)]
    target = Server(server)
    native_name = "COPY" if server == "postgresql" else "LOAD DATA"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = _rows_file(tmp, vectors, server)
            source, source_url = target.fresh(vectors.shape[1])
            native = _native_load(server, source, source_url, path, n)
            os.unlink(path)
            assert _count(source_url) == n
            print(
                f"\n{server} n={n}: {native_name} {native:.1f} s (load average"
                f" {os.getloadavg()[0]:.1f})",
                flush=True,
            )
            print("| path | s | CPU s (client) | ratio to the native load | load average |")
            print("|---|---:|---:|---:|---:|", flush=True)
            if "import" in paths:
                folder = os.path.join(tmp, "parquet")
                export_parquet(source_url, folder, progress=False)
            for what in paths:
                name, url = target.fresh(vectors.shape[1])
                if what == "add":
                    job = lambda url=url: facevec.add(  # noqa: E731
                        url, names, vectors, model_name=MODEL, people=people
                    )
                elif what == "copy":
                    job = lambda url=url: copy_gallery(source_url, url, batch_size=10000)  # noqa: E731
                else:
                    job = lambda url=url: import_parquet(  # noqa: E731
                        folder, url, batch_size=10000, progress=False
                    )
                wall, cpu = _timed(job, profile)
                assert _count(url) == n
                target.drop(name)
                print(
                    f"| {what} | {wall:.1f} | {cpu:.1f} | **{wall / native:.2f}x** |"
                    f" {os.getloadavg()[0]:.1f} |",
                    flush=True,
                )
    finally:
        target.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--servers", default="postgresql,mysql")
    parser.add_argument("--paths", default="add,copy,import")
    parser.add_argument("--people", action="store_true", help="add with its people step")
    parser.add_argument("--profile", action="store_true", help="cProfile each facevec path")
    args = parser.parse_args()
    for n in (int(s) for s in args.sizes.split(",")):
        for server in args.servers.split(","):
            run(server, n, args.paths.split(","), args.people, args.profile)


if __name__ == "__main__":
    main()
