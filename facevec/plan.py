"""Which strategy answers a search, and why: the plan ``find``, ``identify``, the web
API, Spark and ``facevec info`` share.

:func:`choose` is a pure function of what is known about the gallery
(:class:`Facts`: its database, size, knn index and IVF lists) and of the number of
queries; :func:`facts` reads those from a database. Every plan gives the answers of
the strategy it names (the same rows as ``--strategy`` that strategy), only faster:

- SQLite with an IVF knn index: ``knn`` (its default nprobe), all queries in one
  pass over the index (``facevec_knn_batch``);
- SQLite with an exact knn index: ``knn`` for one query (``extension`` under
  :data:`KNN_FROM` faces, as fast there), ``client`` batched for several (one read of
  the gallery ranks them all: bench_plan.py measured it 1.8 to 6 times faster than the
  index's batch, which hands every row within the threshold back through SQL);
- SQLite without one: ``extension`` for one query, ``client`` batched (one read of
  the gallery, the C batch kernel) for several;
- a server with IVF lists: ``client`` probing the lists for one query, ``client``
  batched for several (exact; bench_plan.py: 1,000 queries probed one by one took 25
  times as long as one read of a 10,000-face gallery);
- a server without lists: ``client`` batched for several queries; for one,
  ``client`` on this machine (loopback or socket), ``relational`` across a network
  (every vector would cross it).

:func:`index_plan` says what keeps a SQLite gallery's knn index paying as the
gallery grows (build, sync, or rebuild as IVF); :func:`spark_plan` which side a
Spark batch search broadcasts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .storage import knn_index
from .storage import lists as store_lists
from .storage.database import Database, driver_errors
from .storage.urls import is_url, parse_url

#: The gallery size from which the knn index is IVF: ``knn.build`` chooses IVF from
#: here, and an exact index is rebuilt as IVF once the gallery reaches it.
IVF_FROM = 100_000
#: From this many faces the exact knn index answers one query faster than the
#: extension's scan (bench_plan.py: below it, the index's fixed cost per search is
#: more than the rows it saves).
KNN_FROM = 10_000
#: An IVF index is retrained (about sqrt(N) lists again) once it holds this many
#: times the vectors it was trained on.
RETRAIN_GROWTH = 4
#: An IVF index is rebuilt (its lists kept) once the faces appended since it was
#: trained, kept in mixed chunks that every query reads whole, would add this share
#: to a query's reading of its probed lists (bench_knn.py --writes: 1% of 10M faces
#: appended made queries 1.43x slower at nprobe 87 of 3,162 lists).
UNLISTED_SHARE = 0.25
#: Past this many faces, a server gallery without IVF lists is told that
#: ``reindex --lists`` would pay (benchmarks/README.md, bench_server_ann.py).
SERVER_LISTS_FROM = 50_000
LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class KnnIndex:
    """A SQLite gallery's facevec_knn index, as far as the plan needs it."""

    lists: int  # 0: the exact index
    nprobe: int  # the lists an IVF query reads by default
    vectors: int
    trained: int  # vectors the IVF lists were trained on
    unlisted: int = 0  # vectors appended since, in mixed chunks every query reads

    @classmethod
    def from_status(cls, status: dict[str, Any]) -> KnnIndex:
        return cls(
            int(status.get("lists", 0) or 0),
            int(status.get("nprobe", 0) or 0),
            int(status.get("vectors", 0) or 0),
            int(status.get("trained", 0) or 0),
            int(status.get("unlisted", 0) or 0),
        )


@dataclass(frozen=True)
class Facts:
    """What the plan reads about a gallery."""

    dialect: str  # "sqlite", "postgresql", "mysql"
    faces: int | None  # None: not counted (a server, when a query is planned)
    knn_functions: bool = False  # SQLite with the native extension (facevec_knn)
    knn_index: KnnIndex | None = None
    sql_lists: int = 0  # the gallery's IVF lists on any database (reindex --lists)
    embedding_rows: bool = True  # face_embeddings filled (the relational strategy)
    local: bool = True  # a server on this machine
    knn_damaged: bool = False  # SQLite: the knn index could not be read


@dataclass(frozen=True)
class Plan:
    """The strategy a search runs by (one of ``search.STRATEGIES``), whether it
    answers all its queries in one pass (``batch``), whether its answer is exact,
    and why it was chosen."""

    strategy: str
    batch: bool
    exact: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "batch": self.batch,
            "exact": self.exact,
            "reason": self.reason,
        }


def _count(n: int | None, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def choose(facts: Facts, queries: int = 1) -> Plan:
    """The plan for ``queries`` query vectors against the gallery ``facts`` describes."""
    if queries < 1:
        queries = 1
    many = queries > 1
    if facts.dialect == "sqlite":
        return _sqlite(facts, queries, many)
    return _server(facts, queries, many)


def _sqlite(facts: Facts, queries: int, many: bool) -> Plan:
    index = facts.knn_index if facts.knn_functions else None
    small = facts.faces is not None and facts.faces < KNN_FROM
    if index is not None and index.lists == 0 and small and not many:
        return Plan(
            "extension",
            False,
            True,
            f"{_count(facts.faces, 'face')}: the scan answers one query as fast as the knn "
            f"index, which pays from {KNN_FROM:,} faces",
        )
    if index is not None and index.lists == 0 and many:
        return Plan(
            "client",
            True,
            True,
            f"an exact search of {queries:,} queries: one read of the gallery ranks them all "
            "(C batch kernel), faster than the exact knn index hands back their rows",
        )
    if index is not None:
        one_pass = f"; one pass over it answers all {queries:,} queries" if many else ""
        if index.lists == 0:
            return Plan("knn", False, True, "the exact knn index (SIMD scan of its chunks)")
        return Plan(
            "knn",
            many,
            False,
            f"the IVF knn index: {_count(index.lists, 'list')}, {index.nprobe} read per "
            f"query by default (--nprobe {index.lists} for the exact answer){one_pass}",
        )
    advice = ""
    if facts.knn_damaged:
        advice = "; the knn index could not be read: facevec reindex rebuilds it"
    elif facts.knn_functions:
        advice = "; facevec reindex builds the knn index, faster from a few thousand faces"
    if many:
        return Plan(
            "client",
            True,
            True,
            f"no knn index: one read of the gallery ranks all {queries:,} queries "
            f"(C batch kernel){advice}",
        )
    return Plan(
        "extension", False, True, f"no knn index: the extension's distance in ORDER BY{advice}"
    )


def _server(facts: Facts, queries: int, many: bool) -> Plan:
    advice = ""
    if facts.faces is not None and facts.faces >= SERVER_LISTS_FROM and not facts.sql_lists:
        lists = ivf_lists(facts.faces)
        advice = f"; facevec reindex --lists {lists} would make single queries tens of times faster"
    if facts.sql_lists and many:
        return Plan(
            "client",
            True,
            True,
            f"{queries:,} queries: one read of the gallery ranks them all exactly (C batch "
            f"kernel), faster than probing its {_count(facts.sql_lists, 'IVF list')} per query",
        )
    if facts.sql_lists:
        from .lists import default_nprobe

        return Plan(
            "client",
            False,
            False,
            f"the gallery's {_count(facts.sql_lists, 'IVF list')}: each query reads the "
            f"vectors of its {default_nprobe(facts.sql_lists)} nearest by default "
            f"(--nprobe {facts.sql_lists} for the exact answer)",
        )
    if many:
        return Plan(
            "client",
            True,
            True,
            f"no IVF lists: one read of the gallery ranks all {queries:,} queries "
            f"(C batch kernel){advice}",
        )
    if facts.local or not facts.embedding_rows:
        where = "the server is on this machine" if facts.local else "no face_embeddings rows"
        return Plan(
            "client", False, True, f"no IVF lists, {where}: the C kernels rank the vectors{advice}"
        )
    return Plan(
        "relational",
        False,
        True,
        f"no IVF lists, a remote server: SQL ranks the vectors where they are{advice}",
    )


# Reading the facts -------------------------------------------------------------------


def is_local(name: str) -> bool:
    """Whether a database (its redacted URL, or a SQLite path) is on this machine."""
    if not is_url(name):
        return True
    try:
        parsed = parse_url(name)
    except Exception:  # a name that is not a URL we can read: assume it is far
        return False
    socket = parsed.query.get("unix_socket") or parsed.query.get("host", "").startswith("/")
    return bool(socket) or (parsed.host or "").lower() in LOCAL_HOSTS


def facts(db: Database, count: int | None = None) -> Facts:
    """The facts of an open gallery. ``count``: its faces, when the caller knows
    them (else the knn index's vectors on SQLite, and None on a server, where a
    count takes a scan: a query is planned without it)."""
    dialect = db.dialect.name
    index = None
    functions = db.dialect.has_extension and knn_index.has_functions(db.conn)
    damaged = False
    key = None
    if functions:
        key = (id(db.conn), db.name, knn_index.change_stamp(db.conn))
        cached = _FACTS.get(key)
        if cached is not None and count is None:
            return cached
    if functions:
        try:
            status = knn_index.status(db.conn, "face_meta")
        except driver_errors():  # a damaged index: the scans still answer
            status, damaged = None, True
        index = None if status is None else KnnIndex.from_status(status)
    layout = store_lists.layout(db)
    sql_lists = 0
    if layout.generation is not None:
        sql_lists = len(store_lists.centroids(db, layout)[0])
    if count is None and index is not None:
        count = index.vectors
    found = Facts(
        dialect,
        count,
        functions,
        index,
        sql_lists,
        layout.embedding_rows,
        True if dialect == "sqlite" else is_local(db.name),
        damaged,
    )
    if key is not None:
        _FACTS.clear()  # one gallery's facts at a time: a process searches one or a few
        _FACTS[key] = found
    return found


# (connection, db name, change stamp) -> the facts read then (SQLite).
_FACTS: dict[tuple[Any, ...], Facts] = {}


def plan_for(db: Database, queries: int = 1) -> Plan:
    """The plan for ``queries`` query vectors on an open gallery."""
    return choose(facts(db), queries)


# Keeping the knn index paying --------------------------------------------------------


@dataclass(frozen=True)
class IndexPlan:
    """What keeps a SQLite gallery's knn index in step: "build" (none yet), "sync"
    (fold in the changes), or "rebuild" (as IVF, or retrained); ``lists`` for a
    build or rebuild (None: ``knn.build`` chooses by size)."""

    action: str
    lists: int | None
    reason: str


def ivf_lists(faces_now: int) -> int:
    """The IVF lists of a gallery of ``faces_now`` faces: about sqrt(N), as ``knn.build``."""
    return max(1, round(math.sqrt(faces_now)))


def index_plan(faces_now: int, index: KnnIndex | None) -> IndexPlan:
    """The index work after the gallery changed to ``faces_now`` faces."""
    if index is None:
        return IndexPlan("build", None, "no knn index yet")
    if index.lists == 0 and faces_now >= IVF_FROM:
        lists = ivf_lists(faces_now)
        return IndexPlan(
            "rebuild",
            lists,
            f"{faces_now:,} faces reach the IVF size ({IVF_FROM:,}): {lists:,} lists",
        )
    if index.lists > 0 and index.trained > 0 and faces_now >= RETRAIN_GROWTH * index.trained:
        lists = ivf_lists(faces_now)
        return IndexPlan(
            "rebuild",
            lists,
            f"{faces_now:,} faces, {RETRAIN_GROWTH}x the {index.trained:,} the lists were "
            f"trained on: {lists:,} lists",
        )
    if index.lists > 0 and index.nprobe > 0:
        probed = (index.vectors - index.unlisted) * min(index.nprobe, index.lists) / index.lists
        if index.unlisted > UNLISTED_SHARE * probed:
            return IndexPlan(
                "rebuild",
                index.lists,
                f"{index.unlisted:,} faces appended since the lists were trained, which "
                f"every query reads, add {index.unlisted / max(probed, 1):.0%} to its reading: "
                f"{index.lists:,} lists again",
            )
    return IndexPlan("sync", None, "the index fits the gallery")


# Spark ----------------------------------------------------------------------------------


def spark_plan(gallery_bytes: int, broadcast_limit: int) -> Plan:
    """Which side a Spark batch search copies to every executor: the gallery when
    its vectors fit ``broadcast_limit`` bytes (no shuffle), else the queries."""
    if gallery_bytes <= broadcast_limit:
        return Plan(
            "gallery",
            True,
            True,
            f"the gallery's vectors ({gallery_bytes:,} bytes) fit a broadcast "
            f"({broadcast_limit:,}): each query partition is answered where it is",
        )
    return Plan(
        "queries",
        True,
        True,
        f"the gallery's vectors ({gallery_bytes:,} bytes) exceed a broadcast "
        f"({broadcast_limit:,}): query blocks go to every gallery partition",
    )
