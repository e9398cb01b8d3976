"""Clustered synthetic face vectors for the IVF list tests and benchmarks.

Dlib-like scale (128 dimensions): faces of one identity ~0.3 apart, identities of
one group ~0.7 apart, groups ~1.6 apart (groups stand for the coarse structure
real embeddings have: age, sex, ancestry, lighting). Deterministic for a seed.
"""

from __future__ import annotations

import numpy as np

DIM = 128


def grouped_faces(
    n: int, seed: int = 0, groups: int = 16, faces_per_identity: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """(float32 vectors (n, 128), identity labels) of n faces."""
    rng = np.random.default_rng(seed)
    identities = max(1, n // faces_per_identity)
    group_centres = rng.standard_normal((groups, DIM)) * 0.1
    group_of = rng.integers(0, groups, identities)
    centres = group_centres[group_of] + rng.standard_normal((identities, DIM)) * 0.03
    labels = np.arange(n) % identities
    vectors = centres[labels] + rng.standard_normal((n, DIM)) * 0.02
    return vectors.astype(np.float32), labels


def queries(vectors: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    """New faces of stored identities: a stored face moved by within-identity noise."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), count, replace=False)
    moved = vectors[rows] + rng.standard_normal((count, vectors.shape[1])) * 0.02
    return moved.astype(np.float32)


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of the k nearest rows (euclidean), ties by row."""
    d = ((vectors.astype(np.float64) - query.astype(np.float64)) ** 2).sum(axis=1)
    return np.lexsort((np.arange(len(d)), d))[:k]
