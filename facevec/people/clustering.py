"""Group the faces that have no person into people, incrementally.

``cluster(db)``: every face without a person is compared with every stored face
(``graph.knn_graph``: exact k nearest neighbours from facevec's C kernels), then
clustered by constrained average linkage (``linkage.cluster_faces``) together with
the people that exist already:

- a new face joins an existing person when its RMS distance to that person's
  faces is within the linkage threshold (and it is in no photo of that person,
  and was never rejected from them);
- faces that stay together without an existing person become a new, unnamed,
  suggested person if there are at least ``min_faces`` of them;
- assignments that exist are never moved, people are never merged (that is a
  user's decision: ``people merge``), so a rerun with no new face changes nothing.

The run is one transaction, recorded for ``people undo``; stopped before its end
(Ctrl-C), it leaves the gallery as it was.

Cost, q faces without a person among n: O(q·n·d) for the graph (the kernels'
batch top-k, two threads), O(q·k·log(q·k)) for the linkage.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import InvalidParameterError, PeopleConflictError, SkippedFacesWarning
from ..metrics import face_metric
from ..storage import people as store
from ..storage.database import Database, DbArg
from ..vectors import problems
from . import defaults
from .gallery import open_gallery
from .graph import knn_graph
from .linkage import Clustering, cluster_faces


@dataclass
class ClusterReport:
    faces: int  # stored faces
    unassigned: int  # faces that had no person before the run
    joined_existing: int  # of those, faces that joined a person who existed
    new_people: int
    faces_in_new_people: int
    left_unassigned: int
    threshold: float
    metric: str
    seconds: float
    edit_id: int | None  # the person_edit row (people undo), None if nothing changed
    gone: int = 0  # faces deleted (a photo replaced or pruned) while the run computed
    # Faces left out: their vectors make the metric's distances undefined (written by
    # an older version or another program), {face id: why}.
    skipped: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def prepare_vectors(vectors: np.ndarray, metric: str) -> np.ndarray:
    """The vectors in clustering's euclidean space (unit length for cosine / l2)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if defaults.normalises(metric) and vectors.size:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1), dtype=np.float32)
    return vectors


def cluster_vectors(
    vectors: np.ndarray,
    photos: np.ndarray,
    person_of_row: np.ndarray | None = None,
    rejections: Iterable[tuple[int, int]] = (),
    model_name: str = "Dlib",
    metric: str = "euclidean",
    threshold: float | None = None,
    min_faces: int = defaults.MIN_FACES,
    neighbours: int = defaults.NEIGHBOURS,
    progress: Callable[[int], None] | None = None,
) -> Clustering:
    """Cluster vectors in memory (what ``cluster`` does after loading the gallery).

    ``photos``: one integer per row, equal for faces of one photo. ``person_of_row``:
    the existing person index (0..P-1) of each row, -1 for rows to cluster.
    ``threshold``: the linkage threshold in the metric's units (cosine: a cosine
    distance); default: ``defaults.linkage_threshold(model_name, metric)``.
    """
    face_metric(metric)
    if threshold is None:
        linkage = defaults.linkage_threshold(model_name, metric)
    else:
        linkage = defaults.to_euclidean(defaults.check_positive("threshold", threshold), metric)
    if isinstance(min_faces, bool) or not isinstance(min_faces, int) or min_faces < 1:
        raise InvalidParameterError(f"min_faces must be a positive integer, not {min_faces!r}")
    space = prepare_vectors(vectors, metric)
    n = space.shape[0]
    person_of_row = np.full(n, -1, np.int64) if person_of_row is None else person_of_row
    queries = np.flatnonzero(np.asarray(person_of_row) < 0)
    graph = knn_graph(space, queries, neighbours, defaults.GRAPH_SHARE * linkage, progress=progress)
    return cluster_faces(
        space, person_of_row, photos, graph, linkage, min_faces=min_faces, rejections=rejections
    )


def cluster(
    db: DbArg,
    distance_metric: str = "euclidean",
    threshold: float | None = None,
    min_faces: int = defaults.MIN_FACES,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> ClusterReport:
    """Put the faces that have no person into people; see the module docstring.

    ``on_progress(done, total)``: called as the faces with no person are compared
    with every stored face (an exception it raises stops the run; nothing is written).

    ``threshold``: the linkage threshold (the RMS distance, in the metric's units,
    below which two groups of faces are one person); default: 0.92 x deepface's
    threshold for the gallery's model and metric (0.552 for Dlib, euclidean).
    """
    started = time.perf_counter()
    face_metric(distance_metric)
    with open_gallery(db) as (database, collection):
        faces, skipped = _loaded_faces(database, collection.dimensions, distance_metric)
        n = len(faces.ids)
        row_of_face = {int(face_id): row for row, face_id in enumerate(faces.ids.tolist())}
        assigned = {
            face: value
            for face, value in store.assignments(database).items()
            if face in row_of_face
        }
        people = sorted({person for person, _ in assigned.values()})
        index_of_person = {person: i for i, person in enumerate(people)}
        person_of_row = np.full(n, -1, dtype=np.int64)
        for face_id, (person, _) in assigned.items():
            person_of_row[row_of_face[face_id]] = index_of_person[person]
        rejected = [
            (row_of_face[face], index_of_person[person])
            for face, person in store.rejections(database)
            if face in row_of_face and person in index_of_person
        ]
        photos = np.unique(np.asarray(faces.img_names, dtype=object), return_inverse=True)[1]
        free_rows = np.flatnonzero(person_of_row < 0)
        linkage = (
            defaults.linkage_threshold(collection.model_name, distance_metric)
            if threshold is None
            else defaults.to_euclidean(
                defaults.check_positive("threshold", threshold), distance_metric
            )
        )
        report = ClusterReport(
            faces=n,
            unassigned=int(free_rows.size),
            joined_existing=0,
            new_people=0,
            faces_in_new_people=0,
            left_unassigned=int(free_rows.size),
            threshold=float(linkage),
            metric=distance_metric,
            seconds=0.0,
            edit_id=None,
            skipped=skipped,
        )
        if skipped:
            warnings.warn(
                f"{database.name}: {len(skipped)} faces left out of clustering, their "
                f"{distance_metric} distance being undefined: "
                + "; ".join(f"face {i} {why}" for i, why in list(skipped.items())[:5]),
                SkippedFacesWarning,
                stacklevel=2,
            )
        if free_rows.size == 0:
            report.seconds = time.perf_counter() - started
            return report
        with _progress_bar(int(free_rows.size), progress, on_progress) as advance:
            result = cluster_vectors(
                faces.vectors,
                photos,
                person_of_row,
                rejected,
                model_name=collection.model_name,
                metric=distance_metric,
                threshold=threshold,
                min_faces=min_faces,
                progress=advance,
            )
        free_faces = faces.ids[free_rows]
        joined = np.flatnonzero(result.person >= 0)
        clustered = np.flatnonzero(result.cluster >= 0)
        report.joined_existing = int(joined.size)
        report.new_people = int(result.cluster.max()) + 1 if clustered.size else 0
        report.faces_in_new_people = int(clustered.size)
        report.left_unassigned = int(free_rows.size - joined.size - clustered.size)
        if joined.size or clustered.size:
            # End the read snapshot of the load (MariaDB's repeatable read would keep
            # it), so the checks below see what others committed while the graph ran.
            database.rollback()
            with database.transaction():
                write_run(
                    database, report, result, free_faces, joined, clustered, people, min_faces
                )
        report.seconds = time.perf_counter() - started
        return report


def write_run(
    database: Database,
    report: ClusterReport,
    result: Clustering,
    free_faces: np.ndarray,
    joined: np.ndarray,
    clustered: np.ndarray,
    people: list[int],
    min_faces: int,
) -> None:
    """The run's assignments (this one's, or Spark's: ``facevec.spark.people_write``),
    inside its write transaction: only for faces still
    stored (a photo replaced or pruned while the graph ran took its faces away) and
    people who still exist, and a new person only where at least ``min_faces`` of
    its faces remain."""
    wanted = [int(face) for face in free_faces[np.concatenate([joined, clustered])]]
    if store.persons_of_faces(database, wanted):
        raise PeopleConflictError(
            "people changed while clustering ran (another cluster run or edit); "
            "nothing was written: run it again"
        )
    present = store.existing_faces(database, wanted)
    alive = {
        p
        for p in {people[int(result.person[i])] for i in joined}
        if store.person_exists(database, p)
    }
    joins = [
        (int(free_faces[i]), people[int(result.person[i])], _score(result.score[i]))
        for i in joined
        if int(free_faces[i]) in present and people[int(result.person[i])] in alive
    ]
    members: dict[int, list[tuple[int, float | None]]] = {}
    for i in clustered:
        if int(free_faces[i]) in present:
            members.setdefault(int(result.cluster[i]), []).append(
                (int(free_faces[i]), _score(result.score[i]))
            )
    groups = [members[c] for c in sorted(members) if len(members[c]) >= min_faces]
    report.gone = len(wanted) - len(present)
    report.joined_existing = len(joins)
    report.new_people = len(groups)
    report.faces_in_new_people = sum(len(group) for group in groups)
    report.left_unassigned = len(present) - report.joined_existing - report.faces_in_new_people
    report.left_unassigned += report.unassigned - len(wanted)
    if not joins and not groups:
        return
    report.edit_id = write_suggestions(
        database,
        joins,
        groups,
        "cluster",
        f"clustered {report.unassigned} faces: {report.joined_existing} joined existing people, "
        f"{report.new_people} new people ({report.faces_in_new_people} faces)",
    )


def write_suggestions(
    database: Database,
    joins: Sequence[tuple[int, int, float]],
    groups: Sequence[Sequence[tuple[int, float]]],
    action: str,
    summary: str,
) -> int:
    """Suggest each (face, person, score) of `joins` and make each group of (face,
    score) a new unnamed person, as one recorded, undoable edit; returns its id."""
    receivers = {person for _, person, _ in joins}
    changed = sorted([face for face, _, _ in joins] + [f for g in groups for f, _ in g])
    before = store.snapshot(database, receivers, changed)
    new_ids = store.create_persons(database, len(groups))
    rows = [(face, person, "suggested", score) for face, person, score in joins]
    for person, group in zip(new_ids, groups, strict=True):
        rows += [(face, person, "suggested", score) for face, score in group]
    store.assign(database, rows)
    return store.record_edit(database, action, summary, receivers | set(new_ids), changed, before)


def _loaded_faces(
    database: Database, dimensions: int, metric: str
) -> tuple[store.FaceSet, dict[int, str]]:
    """The stored faces clustering can rank under ``metric``, and those it cannot
    ({face id: why}: another size, or a vector that makes the distance undefined)."""
    loaded = store.load_faces(database, dimensions=dimensions)
    skipped = {
        face: f"is {size} bytes, not {dimensions} float32 values"
        for face, size in loaded.other_sizes.items()
    }
    bad = [p for p in problems(loaded.vectors) if p.undefined_for(metric)]
    # Faces a user set aside (people page: dismiss) are no one's: left out, not skipped.
    dismissed = np.flatnonzero(np.isin(loaded.ids, list(store.dismissed_faces(database))))
    if not bad and not dismissed.size:
        return loaded, skipped
    skipped.update({int(loaded.ids[p.row]): p.reason for p in bad})
    left_out = np.asarray([p.row for p in bad] + dismissed.tolist(), dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(loaded.ids)), left_out)
    kept = store.FaceSet(
        loaded.ids[keep],
        [loaded.img_names[i] for i in keep.tolist()],
        np.ascontiguousarray(loaded.vectors[keep]),
    )
    return kept, skipped


def _score(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 6)


class _progress_bar:
    """A tqdm bar over the faces compared with every stored face."""

    def __init__(
        self, total: int, enabled: bool, on_progress: Callable[[int, int], None] | None = None
    ) -> None:
        from tqdm import tqdm

        self.total = total
        self.done = 0
        self.on_progress = on_progress

        self.bar = tqdm(
            total=total,
            unit="face",
            desc="people: comparing faces",
            disable=not enabled,
            dynamic_ncols=True,
        )

    def __enter__(self) -> Callable[[int], None]:
        if self.on_progress is None:
            return self.bar.update
        self.on_progress(0, self.total)
        return self._advance

    def _advance(self, count: int) -> None:
        self.bar.update(count)
        self.done += count
        assert self.on_progress is not None
        self.on_progress(self.done, self.total)

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
