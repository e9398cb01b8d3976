"""Small synthetic galleries for the Spark tests: people as clusters of vectors at
Dlib's scale, so that deepface's threshold (0.6) keeps a person's faces and drops
the others'."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import facevec
from facevec.transfer import export_parquet


def people_vectors(people: int, per_person: int, seed: int, dims: int = 128):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=0.09, size=(people, dims))
    noise = rng.normal(scale=0.02, size=(people, per_person, dims))
    vectors = (centres[:, None, :] + noise).reshape(-1, dims).astype(np.float32)
    names = [f"person{p:02d}/photo{i:02d}.jpg" for p in range(people) for i in range(per_person)]
    return vectors, names


def sharded_gallery(root: Path, seed: int = 7) -> dict:
    """Three SQLite shards and one Parquet shard, and the merged gallery in one file
    (ids in shard order). One vector is stored twice, in shards 0 and 2: a tie that
    only the (shard, id) order settles, as find settles it by id."""
    vectors, names = people_vectors(10, 8, seed)
    vectors[50] = vectors[3]  # person06/photo02 == person00/photo03, bit for bit
    bounds = [0, 20, 40, 60, 80]
    shards, merged = [], root / "merged.db"
    for shard in range(4):
        part = slice(bounds[shard], bounds[shard + 1])
        path = root / f"shard{shard}.db"
        facevec.add(path, names[part], vectors[part])
        facevec.add(merged, names[part], vectors[part])
        shards.append(path)
    export_parquet(shards[3], root / "shard3", progress=False)
    sources = [str(shards[0]), str(shards[1]), str(shards[2]), str(root / "shard3")]
    return {"sources": sources, "merged": merged, "vectors": vectors, "names": names}


def noisy_queries(vectors: np.ndarray, rows: list[int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = vectors[rows]
    return (picked + rng.normal(scale=0.01, size=picked.shape)).astype(np.float32)
