"""Small Dlib-like face vectors for the people tests, and pairwise scores.

Identities share a common component (Dlib descriptors have norm ~1.5 while
faces of different people sit ~0.8 apart); faces of one identity scatter ~0.42
apart, as Dlib's do. Deterministic for a seed.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

DIM = 128


def clustered_vectors(n: int, seed: int = 0, mean_faces: float = 5.0):
    """(float32 vectors, identity labels) of n faces."""
    rng = np.random.default_rng(seed)
    sizes, total = [], 0
    while total < n:
        size = min(1 + int(rng.geometric(1 / (mean_faces - 1))), n - total)
        sizes.append(size)
        total += size
    common = rng.standard_normal(DIM)
    common *= 1.45 / np.linalg.norm(common)
    centres = common + rng.standard_normal((len(sizes), DIM)) * 0.0415
    labels = np.repeat(np.arange(len(sizes)), sizes)
    scale = rng.lognormal(0.0, 0.12, n)[:, None]
    vectors = centres[labels] + rng.standard_normal((n, DIM)) * 0.0262 * scale
    return vectors.astype(np.float32), labels


def pair_scores(predicted, truth) -> dict[str, float]:
    """Pairwise precision and recall; -1 (unassigned) counts as a person of its own."""
    predicted = np.asarray(predicted).copy()
    noise = predicted < 0
    predicted[noise] = predicted.max(initial=0) + 1 + np.arange(noise.sum())

    def pairs(counts: Counter) -> int:
        return sum(c * (c - 1) // 2 for c in counts.values())

    together = pairs(Counter(zip(predicted.tolist(), np.asarray(truth).tolist(), strict=True)))
    found, true = pairs(Counter(predicted.tolist())), pairs(Counter(np.asarray(truth).tolist()))
    return {
        "precision": together / found if found else 1.0,
        "recall": together / true if true else 1.0,
    }
