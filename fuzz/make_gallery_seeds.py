"""Write the seed corpus of fuzz_gallery_file.c: small, valid facevec galleries.

    python fuzz/make_gallery_seeds.py        # rewrites fuzz/gallery_seeds/*.db

Each seed is what facevec.add writes (face_meta, face_embeddings, ingest_ledger,
facevec_collection) for random 8-d vectors, with the knn index in one of the
states a file can be in: synced, with changes pending in its log, with
deleted slots, in the middle of a build. Pages of 512 bytes and chunks of 64
slots keep each file a few KB, so the fuzzer's mutations land on the index's
numbers, not on padding.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

import facevec

OUT = Path(__file__).resolve().parent / "gallery_seeds"
DIM = 8


def vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal((n, DIM)).astype(np.float32)


def gallery(path: Path, n: int, seed: int) -> None:
    """facevec.add's gallery of n vectors, its ledger filled as an ingest
    would, and the index rebuilt in chunks of 64."""
    rng = np.random.default_rng(seed)
    names = [f"/photos/person{i % 7}/img{i:03d}.jpg" for i in range(n)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        facevec.add(str(path), names, vectors(rng, n), model_name="Facenet")
    conn = facevec.connect(path)
    conn.executemany(
        "INSERT OR REPLACE INTO ingest_ledger(path, sha256, size_bytes, outcome, faces, message,"
        " model_name, detector_backend, seconds, first_seen_at, updated_at)"
        " VALUES (?, 'ab', 1000, ?, ?, ?, 'Facenet', 'skip', 0.5, '2024-01-01', '2024-01-02')",
        [
            (name, outcome, faces, message)
            for name, outcome, faces, message in [
                *((name, "indexed", 1, None) for name in names[:5]),
                ("/photos/notes.txt.jpg", "not_image", 0, "not an image"),
                ("/photos/empty.jpg", "no_face", 0, "no face found"),
            ]
        ],
    )
    conn.commit()
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 64)")
    conn.commit()
    conn.close()


def change(path: Path, seed: int) -> None:
    """Changes a writer without facevec makes: logged by the triggers."""
    rng = np.random.default_rng(seed)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE face_meta SET embedding = ? WHERE id = 3", (vectors(rng, 1)[0].tobytes(),))
    conn.execute("DELETE FROM face_meta WHERE id = 4")
    conn.execute(
        "INSERT INTO face_meta(img_name, face_index, embedding, model_name, created_at)"
        " SELECT img_name || '.new', 0, ?, model_name, created_at FROM face_meta WHERE id = 5",
        (vectors(rng, 1)[0].tobytes(),),
    )
    conn.commit()
    conn.close()


def compact(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA page_size = 512")
    conn.execute("VACUUM")
    conn.close()
    return path.read_bytes()


def seeds(workdir: Path) -> dict[str, bytes]:
    out = {}
    db = workdir / "synced.db"
    gallery(db, 50, 1)
    out["synced"] = compact(db)

    db = workdir / "pending.db"
    gallery(db, 50, 2)
    change(db, 2)
    out["pending"] = compact(db)

    db = workdir / "two_chunks_deleted.db"
    gallery(db, 90, 3)
    conn = facevec.connect(db)
    conn.execute("DELETE FROM face_meta WHERE id % 5 = 0")
    conn.commit()
    conn.execute("SELECT facevec_knn_sync('face_meta')")
    conn.commit()
    conn.close()
    change(db, 3)
    out["two_chunks_deleted"] = compact(db)

    db = workdir / "building.db"
    gallery(db, 50, 4)
    conn = facevec.connect(db)
    conn.execute("SELECT facevec_knn_create('face_meta', 'embedding', 64)")
    conn.commit()
    conn.execute("SELECT facevec_knn_sync('face_meta', 20)")
    conn.commit()
    conn.close()
    out["building"] = compact(db)
    return out


def main() -> None:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in seeds(Path(tmp)).items():
            (OUT / f"{name}.db").write_bytes(data)
            print(f"{OUT.name}/{name}.db: {len(data)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
