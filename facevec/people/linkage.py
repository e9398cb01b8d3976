"""Constrained average-linkage clustering of faces on a nearest-neighbour graph.

Clusters merge in order of their average linkage: the root mean square of the
distances between every face of one and every face of the other,

    L(A, B)^2 = mean over a in A, b in B of |a - b|^2 = |mean_A - mean_B|^2 + s_A + s_B

where s is a cluster's mean squared distance to its centroid. The identity makes
each linkage O(d) from a cluster's count, centroid and spread, however large the
clusters are, and it is exact (not a centroid approximation). Average linkage does
not chain: one look-alike pair cannot glue two people together, as it can in
single linkage, DBSCAN or Chinese whispers, because the whole of both clusters
has to be close.

The graph only proposes which clusters to compare (clusters that hold
neighbouring faces); the linkage itself is computed on all their faces. Merges
stop at linkage ``threshold``. Constraints, checked at every merge:

- two faces of one photo are never one person (cannot-link);
- a face never joins a person it was rejected from;
- existing people never merge with each other (only a user merges people); a
  cluster that joins an existing person takes its id.

Complexity: O(E log E) heap operations for E graph edges, each merge costing
O(d · degree) to refresh the linkages of the merged cluster's neighbours.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .graph import Graph


@dataclass(frozen=True)
class Clustering:
    """For each free face (row of the input that had no person): the index of the
    existing person it joined, else the new cluster it belongs to, else -1."""

    person: np.ndarray  # int64: existing person index, or -1
    cluster: np.ndarray  # int64: new cluster number (0, 1, ...), or -1
    score: np.ndarray  # float64: RMS distance to the other faces of its person, NaN if alone
    merges: int


def cluster_faces(
    vectors: np.ndarray,
    person_of_row: np.ndarray,
    photo_of_row: np.ndarray,
    graph: Graph,
    threshold: float,
    min_faces: int = 2,
    rejections: Iterable[tuple[int, int]] = (),
) -> Clustering:
    """Cluster the rows whose ``person_of_row`` is -1 among themselves and into the
    existing people (``person_of_row`` >= 0, contiguous 0..P-1 for the people given).

    ``photo_of_row``: an integer per row, equal for faces of one photo.
    ``rejections``: (row, person index) pairs, "this face is not that person".
    New clusters with fewer than ``min_faces`` faces are left unassigned (-1).
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    person_of_row = np.asarray(person_of_row, dtype=np.int64)
    photo_of_row = np.asarray(photo_of_row, dtype=np.int64)
    free_rows = np.flatnonzero(person_of_row < 0)
    n_free = free_rows.size
    n_people = (
        int(person_of_row.max()) + 1 if person_of_row.size and person_of_row.max() >= 0 else 0
    )
    n_nodes = n_free + n_people

    # Node of each row: its own node if free, its person's node otherwise.
    node_of_row = np.empty(person_of_row.size, dtype=np.int64)
    node_of_row[free_rows] = np.arange(n_free)
    anchored_rows = np.flatnonzero(person_of_row >= 0)
    node_of_row[anchored_rows] = n_free + person_of_row[anchored_rows]

    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    count = np.zeros(n_nodes, dtype=np.float64)
    total = np.zeros((n_nodes, dim), dtype=np.float64)
    sumsq = np.zeros(n_nodes, dtype=np.float64)
    np.add.at(count, node_of_row, 1.0)
    np.add.at(total, node_of_row, vectors)
    np.add.at(sumsq, node_of_row, np.einsum("ij,ij->i", vectors, vectors))
    live = count > 0
    mean = np.zeros_like(total)
    mean[live] = total[live] / count[live, None]
    spread = np.zeros(n_nodes, dtype=np.float64)
    spread[live] = np.maximum(
        sumsq[live] / count[live] - np.einsum("ij,ij->i", mean, mean)[live], 0
    )
    anchored = np.zeros(n_nodes, dtype=bool)
    anchored[n_free:] = True

    photos: list[set[int]] = [set() for _ in range(n_nodes)]
    for row, node in enumerate(node_of_row.tolist()):
        photos[node].add(int(photo_of_row[row]))
    # People each cluster may not join (rejected by one of its faces).
    refused: list[set[int]] = [set() for _ in range(n_nodes)]
    for row, person in rejections:
        node = int(node_of_row[row])
        if not anchored[node]:
            refused[node].add(n_free + int(person))

    adjacency: list[set[int]] = [set() for _ in range(n_nodes)]
    a_nodes = node_of_row[graph.source]
    b_nodes = node_of_row[graph.target]
    mergeable = (a_nodes != b_nodes) & ~(anchored[a_nodes] & anchored[b_nodes])
    for a, b in zip(a_nodes[mergeable].tolist(), b_nodes[mergeable].tolist(), strict=True):
        adjacency[a].add(b)
        adjacency[b].add(a)

    limit = float(threshold) ** 2
    version = np.zeros(n_nodes, dtype=np.int64)
    parent = np.arange(n_nodes)
    alive = live.copy()

    def linkages(a: int, others: list[int]) -> np.ndarray:
        diff = mean[others] - mean[a]
        return np.einsum("ij,ij->i", diff, diff) + spread[others] + spread[a]

    heap: list[tuple[float, int, int, int, int]] = []
    for a in range(n_nodes):
        others = [b for b in adjacency[a] if b > a]
        if not others:
            continue
        for b, value in zip(others, linkages(a, others).tolist(), strict=True):
            if value <= limit:
                heap.append((value, a, b, 0, 0))
    heapq.heapify(heap)

    def allowed(a: int, b: int) -> bool:
        if anchored[a] and anchored[b]:
            return False
        if not photos[a].isdisjoint(photos[b]):
            return False
        return a not in refused[b] and b not in refused[a]

    merges = 0
    while heap:
        _, a, b, version_a, version_b = heapq.heappop(heap)
        if not (alive[a] and alive[b]) or version[a] != version_a or version[b] != version_b:
            continue
        if not allowed(a, b):
            # Clusters only grow, so a refused pair stays refused: forget the edge.
            adjacency[a].discard(b)
            adjacency[b].discard(a)
            continue
        # The survivor: the existing person if there is one, else the larger cluster.
        if anchored[b] or (not anchored[a] and count[b] > count[a]):
            a, b = b, a
        n_a, n_b = count[a], count[b]
        merged = (n_a * mean[a] + n_b * mean[b]) / (n_a + n_b)
        da, db = mean[a] - merged, mean[b] - merged
        spread[a] = (n_a * (spread[a] + da @ da) + n_b * (spread[b] + db @ db)) / (n_a + n_b)
        mean[a] = merged
        count[a] = n_a + n_b
        alive[b] = False
        parent[b] = a
        photos[a] |= photos[b]
        refused[a] |= refused[b]
        for c in adjacency[b]:
            adjacency[c].discard(b)
            if c != a:
                adjacency[c].add(a)
                adjacency[a].add(c)
        adjacency[a].discard(b)
        adjacency[b] = set()
        version[a] += 1
        merges += 1
        others = [c for c in adjacency[a] if not (anchored[a] and anchored[c])]
        if others:
            for c, value in zip(others, linkages(a, others).tolist(), strict=True):
                if value <= limit:
                    heapq.heappush(heap, (value, a, c, version[a], version[c]))

    root = parent.copy()
    for node in range(n_nodes):  # path halving to the surviving node
        r = node
        while root[r] != r:
            root[r] = root[root[r]]
            r = root[r]
        root[node] = r
    free_root = root[:n_free]
    person = np.where(anchored[free_root], free_root - n_free, -1)
    cluster = np.full(n_free, -1, dtype=np.int64)
    new_roots, sizes = np.unique(free_root[person < 0], return_counts=True)
    numbered = {int(r): i for i, r in enumerate(new_roots[sizes >= min_faces].tolist())}
    for i, r in enumerate(free_root.tolist()):
        if person[i] < 0:
            cluster[i] = numbered.get(r, -1)

    # Score: RMS distance from a face to the other faces of its cluster/person.
    score = np.full(n_free, np.nan)
    x = vectors[free_rows]
    n = count[free_root]
    diff = x - mean[free_root]
    own = np.einsum("ij,ij->i", diff, diff)
    # Without the face itself: mean |x - y|^2 over the others = (n (|x - m|^2 + s) - 0) / (n - 1)
    others = n > 1
    score[others] = np.sqrt(
        np.maximum(n[others] * (own[others] + spread[free_root[others]]) / (n[others] - 1), 0)
    )
    return Clustering(person=person, cluster=cluster, score=score, merges=merges)
