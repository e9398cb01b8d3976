"""The people step at the end of every run that stores faces: new faces are
recognised as known people, the rest grouped, so nobody has to run ``people
cluster`` after each import.

``keep_people_current(database)`` looks at the faces stored since it last ran
(ids above the gallery's mark, ``facevec_collection.people_checked_id``; ids are
never reused) that have no person:

1. recognised: a face joins a known person when ``identify`` would say
   ``matched`` (the same candidates, scores, threshold and margin:
   ``identify.score_people`` and ``identify.decide``), stored as a 'suggested'
   assignment with its score; never a person it was rejected from, nor one who
   has another face in its photo (the surer of two faces of one photo wins);
2. grouped: the faces nobody was recognised in (``unknown``), together with faces
   left alone by earlier runs that are among their neighbours, are clustered by
   ``people cluster``'s constrained average linkage (``linkage.cluster_faces``,
   the same thresholds); a group of at least ``min_faces`` becomes a new, unnamed,
   suggested person;
3. left alone: the rest (``ambiguous`` faces, lone faces); ``people cluster``
   and the people pages still see them.

Assignments that exist are never changed (a user's word, a folder, a suggestion);
a face given a person meanwhile (an edit while the step computed) is skipped. The
step writes in one transaction with a ``person_edit`` row (``people undo``
takes it back) and moves the mark, so a run stopped before it leaves its faces to
the next run's step.

Cost, q new faces: one nearest-neighbour search of the gallery per face, in one
batch (``search.nearest_batch``: the knn index on SQLite, IVF lists where trained,
else SQL per face on a server), the vectors of the people those neighbours
belong to, and linkage on the q faces and their unassigned neighbours: no pass
over the whole gallery. From MATRIX_FROM new faces on SQLite (with an IVF index,
from 1/IVF_SHARE of the gallery: a first load, a large import) the gallery's
vectors are read once and ranked in memory by the batch kernels on two threads
(``graph.nearest_rows``): the same neighbours as the exact index, at a fraction
of the cost of q searches. The candidates, scores and grouping edges are then
computed with array operations, each person's faces stacked once.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from .. import knn
from ..errors import UnknownModelError
from ..metrics import face_metric
from ..search import nearest_batch
from ..storage import faces
from ..storage import people as store
from ..storage.database import Database
from ..vectors import problems
from . import defaults
from .clustering import prepare_vectors, write_suggestions
from .graph import Graph, nearest_rows
from .identify import CANDIDATE_FACES, decide, person_scores, resolve_threshold
from .linkage import cluster_faces

# New faces from which the step ranks the whole gallery in memory with the batch
# kernels (two threads) instead of searching the knn index face by face: reading
# the vectors costs about what a few hundred searches do.
MATRIX_FROM = 256
MATRIX_BYTES = 1 << 30  # the largest gallery matrix read for it (2M 128-d faces)
IVF_SHARE = 16  # with an IVF index: from new faces 1/16 of the gallery


@dataclass(frozen=True)
class Neighbours:
    """The new faces' nearest stored faces, flat: for each pair, the new face's row
    (``owner``, ascending) and the neighbour's id (``faces``), nearest first within
    each row."""

    owner: np.ndarray  # int64
    faces: np.ndarray  # int64


@dataclass
class PeopleStep:
    """What the people step of one run did."""

    faces: int = 0  # new faces without a person it looked at
    recognised: int = 0  # joined a known person (identify: matched)
    new_people: int = 0
    grouped: int = 0  # new faces in those new people
    earlier_grouped: int = 0  # faces left alone by earlier runs that joined them
    left_alone: int = 0  # new faces with no person still
    seconds: float = 0.0
    edit_id: int | None = None  # the person_edit row (people undo), None if nothing changed

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def summary(self) -> str:
        """One sentence in a user's words."""
        return (
            f"{self.recognised} recognised as known people, {self.new_people} new people"
            f" ({self.grouped} faces), {self.left_alone} left alone"
        )


def has_thresholds(model_name: str, distance_metric: str = "euclidean") -> bool:
    """Whether facevec knows the model's thresholds (the step needs them)."""
    try:
        defaults.identify_threshold(model_name, distance_metric)
    except UnknownModelError:
        return False
    return True


def start_mark(database: Database) -> None:
    """Before a run stores faces in a gallery whose step never ran: the mark goes to
    its last face, so faces stored before (by a version without the step) are left
    to ``people cluster``. Call it once the gallery's collection row exists."""
    if store.people_checked(database) is None:
        with database.transaction():
            if store.people_checked(database) is None:
                store.set_people_checked(database, store.last_face_id(database))


def keep_people_current(
    database: Database,
    dimensions: int,
    model_name: str,
    distance_metric: str = "euclidean",
    min_faces: int = defaults.MIN_FACES,
) -> PeopleStep:
    """The people step (see the module docstring) on an open gallery of
    ``dimensions``-dimensional ``model_name`` vectors."""
    started = time.perf_counter()
    face_metric(distance_metric)
    step = PeopleStep()
    since = store.people_checked(database)
    if since is None:  # the collection was made outside a run (start_mark not called)
        start_mark(database)
        return step
    upto = store.last_face_id(database)
    new = store.unassigned_faces_between(database, since, upto, dimensions)
    bad = {p.row for p in problems(new.vectors) if p.undefined_for(distance_metric)}
    step.faces = len(new.ids) + len(new.other_sizes)
    if len(new.ids) == len(bad):
        step.left_alone = step.faces
        if upto != since:
            with database.transaction():
                store.set_people_checked(database, upto)
        step.seconds = time.perf_counter() - started
        return step
    rows = np.asarray([row for row in range(len(new.ids)) if row not in bad], dtype=np.int64)
    ids, vectors = new.ids[rows], new.vectors[rows]
    photos = [new.img_names[row] for row in rows.tolist()]

    limit = resolve_threshold(database, None, model_name, distance_metric)
    margin = defaults.identify_margin(limit)
    linkage = defaults.linkage_threshold(model_name, distance_metric)
    edge = defaults.GRAPH_SHARE * linkage  # in clustering's euclidean space
    neighbours = _neighbours(
        database,
        ids,
        vectors,
        dimensions,
        distance_metric,
        max(limit, _metric_distance(edge, distance_metric)),
    )
    person_of = store.persons_of_faces(database, np.unique(neighbours.faces).tolist())

    # 1. Recognised: identify's decision on the people of the neighbours.
    recognised, held = _recognised(
        database, ids, vectors, photos, neighbours, person_of, distance_metric, limit, margin
    )

    # 2. Grouped: unknown faces with their unassigned neighbours.
    unknown_rows = [
        row for row, face in enumerate(ids.tolist()) if face not in recognised and face not in held
    ]
    groups = _groups(
        database,
        ids,
        vectors,
        photos,
        unknown_rows,
        neighbours,
        person_of,
        set(ids.tolist()),
        dimensions,
        distance_metric,
        linkage,
        edge,
        min_faces,
    )
    new_ids = set(ids.tolist())
    step.recognised = len(recognised)
    step.new_people = len(groups)
    step.grouped = sum(1 for group in groups for face, _ in group if face in new_ids)
    step.earlier_grouped = sum(len(group) for group in groups) - step.grouped
    # End the read snapshot (MariaDB's repeatable read would keep it), so the write
    # sees what others committed while this computed.
    database.rollback()
    with database.transaction():
        _write(database, step, recognised, groups, new_ids)
        store.set_people_checked(database, max(upto, since))
    step.left_alone = step.faces - step.recognised - step.grouped
    step.seconds = time.perf_counter() - started
    return step


def _neighbours(
    database: Database,
    ids: np.ndarray,
    vectors: np.ndarray,
    dimensions: int,
    metric: str,
    threshold: float,
) -> Neighbours:
    """Each new face's CANDIDATE_FACES nearest other stored faces within
    `threshold`, nearest first (ties by the lower id)."""
    k = CANDIDATE_FACES + 1  # the face itself is stored
    gallery = _gallery_matrix(database, len(ids), dimensions, metric)
    if gallery is None:
        hits = nearest_batch(
            database,
            vectors,
            strategy=_strategy(database),
            distance_metric=metric,
            threshold=threshold,
            k=k,
        )
        lists = [
            [int(f) for f, _ in found if int(f) != int(face_id)][:CANDIDATE_FACES]
            for face_id, found in zip(ids.tolist(), hits, strict=True)
        ]
        counts = np.asarray([len(found) for found in lists], dtype=np.int64)
        flat = np.fromiter((f for found in lists for f in found), np.int64, int(counts.sum()))
        return Neighbours(np.repeat(np.arange(len(ids), dtype=np.int64), counts), flat)
    gallery_ids, matrix = gallery
    rows, _ = nearest_rows(vectors, matrix, k, threshold, metric)
    found = np.where(rows >= 0, gallery_ids[np.maximum(rows, 0)], -1)
    keep = (rows >= 0) & (found != ids[:, None])
    keep &= np.cumsum(keep, axis=1) <= CANDIDATE_FACES
    owner = np.broadcast_to(np.arange(len(ids), dtype=np.int64)[:, None], keep.shape)
    return Neighbours(owner[keep], found[keep])


def _gallery_matrix(
    database: Database, queries: int, dimensions: int, metric: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """The gallery's ids and vectors (id order; those whose distance is undefined
    left out), when ranking them in memory with the batch kernels is cheaper than
    searching the knn index: a SQLite gallery of at most MATRIX_BYTES of vectors, at
    least MATRIX_FROM new faces, and, where the index is IVF (sub-linear per query),
    new faces at least 1/IVF_SHARE of the gallery (a first load, a large import).
    The answers are exact: an IVF index's are their approximation. Else None."""
    if queries < MATRIX_FROM or not database.dialect.has_extension:
        return None
    stored = faces.count(database)
    if stored * dimensions * 4 > MATRIX_BYTES:
        return None
    if knn.available(database.conn):
        info = knn.status(database.conn)
        if info is not None and info.get("lists", 0) > 0 and queries * IVF_SHARE < stored:
            return None
    loaded = store.load_faces(database, dimensions=dimensions)
    bad = sorted(_undefined(loaded.vectors, metric))
    if bad:
        keep = np.setdiff1d(np.arange(len(loaded.ids)), bad)
        return loaded.ids[keep], np.ascontiguousarray(loaded.vectors[keep])
    return loaded.ids, loaded.vectors


def _strategy(database: Database) -> str | None:
    """The gallery's knn index on SQLite (one pass for the whole batch), else the
    database's default strategy."""
    if database.dialect.has_extension and knn.available(database.conn):
        if knn.status(database.conn) is not None:
            return "knn"
    return None


def _metric_distance(euclidean: float, metric: str) -> float:
    """A distance of clustering's space in the metric's units (inverse of
    ``defaults.to_euclidean``)."""
    if face_metric(metric).name == "cosine":
        return euclidean * euclidean / 2.0
    return euclidean


def _recognised(
    database: Database,
    ids: np.ndarray,
    vectors: np.ndarray,
    photos: list[str],
    neighbours: Neighbours,
    person_of: dict[int, int],
    metric: str,
    limit: float,
    margin: float,
) -> tuple[dict[int, tuple[int, float]], set[int]]:
    """{face: (person, score)} of the faces identify would match, and the faces
    held back from grouping: ambiguous, or matched to a person they may not join."""
    if not person_of:
        return {}, set()
    known = np.fromiter(person_of, np.int64, len(person_of))
    order = np.argsort(known)
    at = np.minimum(np.searchsorted(known[order], neighbours.faces), len(known) - 1)
    named = known[order][at] == neighbours.faces
    persons = np.fromiter(person_of.values(), np.int64, len(person_of))[order][at]
    # The candidates of each new face: the people of its neighbours (a face whose
    # neighbours have none is unknown, as identify would say).
    candidates: dict[int, list[int]] = {}
    for row, person in zip(neighbours.owner[named].tolist(), persons[named].tolist(), strict=True):
        candidates.setdefault(row, []).append(person)
    candidates = {row: sorted(set(people)) for row, people in candidates.items()}
    wanted = sorted({p for people in candidates.values() for p in people})
    listed: dict[int, list[np.ndarray]] = {}
    for person, _, vector in store.person_vectors(database, wanted):
        listed.setdefault(person, []).append(vector)
    # Each person's faces stacked once, not once per new face that names them.
    by_person = {person: np.stack(found) for person, found in listed.items()}
    decided: list[tuple[float, int, int]] = []  # (score, face, person), matched only
    held: set[int] = set()
    for row, people in sorted(candidates.items()):
        scored = person_scores(vectors[row], by_person, people, metric, defaults.IDENTIFY_K)
        decision = decide(scored, limit, margin)
        if decision == "matched":
            decided.append((scored[0][0], int(ids[row]), scored[0][1]))
        elif decision == "ambiguous":
            held.add(int(ids[row]))
    if not decided:
        return {}, held
    faces = [face for _, face, _ in decided]
    refused = store.rejected_from(database, faces)
    photo_of = dict(zip(ids.tolist(), photos, strict=True))
    taken = store.people_in_photos(database, sorted({photo_of[f] for f in faces}))
    found: dict[int, tuple[int, float]] = {}
    for score, face, person in sorted(decided):  # the surest first
        photo = photo_of[face]
        if person in refused.get(face, set()) or person in taken.get(photo, set()):
            held.add(face)
            continue
        taken.setdefault(photo, set()).add(person)
        found[face] = (person, round(float(score), 6))
    return found, held


def _groups(
    database: Database,
    ids: np.ndarray,
    vectors: np.ndarray,
    photos: list[str],
    unknown_rows: list[int],
    neighbours: Neighbours,
    person_of: dict[int, int],
    new_faces: set[int],
    dimensions: int,
    metric: str,
    linkage: float,
    edge: float,
    min_faces: int,
) -> list[list[tuple[int, float | None]]]:
    """New people: [[(face, score), ...], ...] of the unknown faces and the faces
    without a person among their neighbours (left alone by earlier runs)."""
    if not unknown_rows:
        return []
    set_aside = store.dismissed_faces(database)  # a user's "not a person": not grouped
    # The unknown faces' neighbours: owner (position among the unknown) and face.
    position = np.full(len(ids), -1, dtype=np.int64)
    position[unknown_rows] = np.arange(len(unknown_rows))
    owner = position[neighbours.owner]
    near_faces = neighbours.faces[owner >= 0]
    owner = owner[owner >= 0]
    taken = np.fromiter(
        [*person_of, *new_faces, *set_aside],
        dtype=np.int64,
        count=len(person_of) + len(new_faces) + len(set_aside),
    )
    earlier = np.unique(near_faces[~np.isin(near_faces, taken)]).tolist()
    older = store.faces_by_id(database, earlier, dimensions)
    undefined = _undefined(older.vectors, metric)
    older_ok = [r for r in range(len(older.ids)) if r not in undefined]
    face_ids = np.concatenate([ids[unknown_rows], older.ids[older_ok]]).astype(np.int64)
    matrix = np.concatenate(
        [vectors[unknown_rows], older.vectors[older_ok].reshape(-1, vectors.shape[1])]
    )
    names = [photos[r] for r in unknown_rows] + [older.img_names[r] for r in older_ok]
    space = prepare_vectors(matrix, metric)
    # Edges: each unknown face to its neighbours among these rows, in its neighbours'
    # order, within `edge` in clustering's space, the first NEIGHBOURS of them.
    by_id = np.argsort(face_ids, kind="stable")
    at = np.minimum(np.searchsorted(face_ids[by_id], near_faces), max(len(face_ids) - 1, 0))
    near_rows = by_id[at] if len(face_ids) else np.empty(0, np.int64)
    here = (face_ids[near_rows] == near_faces) & (near_rows != owner)
    source, target = owner[here], near_rows[here]
    gaps = np.linalg.norm(space[target] - space[source], axis=1).astype(np.float64)
    source, target = source[gaps <= edge], target[gaps <= edge]
    starts = np.flatnonzero(np.r_[True, source[1:] != source[:-1]]) if source.size else source
    rank = np.arange(source.size) - np.repeat(starts, np.diff(np.r_[starts, source.size]))
    first = rank < defaults.NEIGHBOURS
    graph = Graph(
        source[first].astype(np.int64),
        target[first].astype(np.int64),
        np.zeros(int(first.sum()), dtype=np.float32),
    )
    photo_of_row = np.unique(np.asarray(names, dtype=object), return_inverse=True)[1]
    result = cluster_faces(
        space,
        np.full(len(face_ids), -1, dtype=np.int64),
        photo_of_row,
        graph,
        linkage,
        min_faces=min_faces,
    )
    members: dict[int, list[tuple[int, float | None]]] = {}
    for row in np.flatnonzero(result.cluster >= 0).tolist():
        score = result.score[row]
        members.setdefault(int(result.cluster[row]), []).append(
            (int(face_ids[row]), None if np.isnan(score) else round(float(score), 6))
        )
    # A group of earlier faces alone cannot form (every edge starts at a new face).
    return [members[c] for c in sorted(members)]


def _undefined(vectors: np.ndarray, metric: str) -> set[int]:
    return {p.row for p in problems(vectors) if p.undefined_for(metric)}


def _write(
    database: Database,
    step: PeopleStep,
    recognised: dict[int, tuple[int, float]],
    groups: list[list[tuple[int, float | None]]],
    new_faces: set[int],
) -> None:
    """The step's assignments, inside its transaction: only faces still stored
    and still without a person, people who still exist, and new people whose
    faces all are (a group that lost one is left alone, for the next grouping)."""
    wanted = list(recognised) + [face for group in groups for face, _ in group]
    if not wanted:
        return
    taken = set(store.persons_of_faces(database, wanted))
    present = store.existing_faces(database, wanted) - taken
    receivers = {person for person, _ in recognised.values()}
    alive = {person for person in receivers if store.person_exists(database, person)}
    joins = [
        (face, person, score)
        for face, (person, score) in recognised.items()
        if face in present and person in alive
    ]
    kept = [[(f, s) for f, s in group if f in present] for group in groups]
    kept = [group for group, whole in zip(kept, groups, strict=True) if len(group) == len(whole)]
    step.recognised = len(joins)
    step.new_people = len(kept)
    step.grouped = sum(1 for group in kept for face, _ in group if face in new_faces)
    step.earlier_grouped = sum(len(group) for group in kept) - step.grouped
    step.left_alone = step.faces - step.recognised - step.grouped
    if not joins and not kept:
        return
    step.edit_id = write_suggestions(database, joins, kept, "step", f"after a run: {step.summary}")
