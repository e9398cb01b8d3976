"""The ingest ledger: what became of every photo-named file an index run saw.

Besides the outcome, a row keeps what decides whether the next run may skip the
file: its content hash, its size, modification time and inode (a rescan compares
these with ``os.stat`` and reads only files whose stat changed), and the settings
it was indexed with (``settings``: model, detector and quality floors; a row with
other settings is redone). Every statement on ``ingest_ledger`` is here. Callers
own the transaction.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields

from .database import Database
from .schema import OUTCOMES


@dataclass(frozen=True)
class LedgerEntry:
    """One file's row; ``first_seen_at`` is kept from an earlier row on update."""

    path: str
    sha256: str | None
    size_bytes: int | None
    outcome: str  # one of schema.OUTCOMES
    faces: int
    message: str | None
    model_name: str | None
    detector_backend: str | None
    seconds: float | None
    first_seen_at: str
    updated_at: str
    mtime_ns: int | None = None  # the file's stat when it was read (schema version 6)
    inode: int | None = None
    settings: str | None = None  # the settings it was indexed with (NULL: before version 6)


_COLUMNS = tuple(field.name for field in fields(LedgerEntry))
# Added in schema version 6: absent from an older gallery that was only read.
_NEW_COLUMNS = ("mtime_ns", "inode", "settings")


@dataclass(frozen=True)
class Seen:
    """What an earlier run recorded of a file, to decide whether to redo it."""

    sha256: str | None
    outcome: str
    model_name: str | None
    detector_backend: str | None
    size_bytes: int | None = None
    mtime_ns: int | None = None
    inode: int | None = None
    settings: str | None = None


def entries_under(db: Database, folder_prefix: str) -> dict[str, Seen]:
    """The ledger rows of the files under a folder (`folder_prefix` ends with a separator)."""
    rows = db.query(
        "SELECT path, sha256, outcome, model_name, detector_backend, size_bytes, mtime_ns,"
        " inode, settings FROM ingest_ledger WHERE substr(path, 1, {p}) = {p}",
        (len(folder_prefix), folder_prefix),
    )
    return {path: Seen(*rest) for path, *rest in rows}


def has_entries_under(db: Database, folder_prefix: str) -> bool:
    """Whether any ledger row lies under a folder (`folder_prefix` ends with a separator)."""
    row = db.execute(
        "SELECT 1 FROM ingest_ledger WHERE substr(path, 1, {p}) = {p} LIMIT 1",
        (len(folder_prefix), folder_prefix),
    ).fetchone()
    return row is not None


def entries_at(db: Database, paths: list[str]) -> dict[str, Seen]:
    """The ledger rows of these exact paths (those that have one)."""
    found: dict[str, Seen] = {}
    for start in range(0, len(paths), 500):
        chunk = paths[start : start + 500]
        rows = db.query(
            "SELECT path, sha256, outcome, model_name, detector_backend, size_bytes, mtime_ns,"
            f" inode, settings FROM ingest_ledger WHERE path IN ({db.dialect.params(len(chunk))})",
            chunk,
        )
        found.update({path: Seen(*rest) for path, *rest in rows})
    return found


def rows_at(db: Database, paths: list[str]) -> dict[str, LedgerEntry]:
    """The whole ledger rows of these exact paths (those that have one)."""
    found: dict[str, LedgerEntry] = {}
    for start in range(0, len(paths), 500):
        chunk = paths[start : start + 500]
        rows = db.query(
            f"SELECT {', '.join(_COLUMNS)} FROM ingest_ledger"
            f" WHERE path IN ({db.dialect.params(len(chunk))})",
            chunk,
        )
        found.update({row[0]: LedgerEntry(*row) for row in rows})
    return found


def paths_under(db: Database, folder_prefix: str) -> list[str]:
    """Paths of the rows under a folder (`folder_prefix` ends with a separator)."""
    rows = db.query(
        "SELECT path FROM ingest_ledger WHERE substr(path, 1, {p}) = {p}",
        (len(folder_prefix), folder_prefix),
    )
    return [path for (path,) in rows]


def touch(db: Database, path: str, size: int, mtime_ns: int, inode: int, stamp: str) -> None:
    """A file whose stat changed but not its content: record the new stat only."""
    db.execute(
        "UPDATE ingest_ledger SET size_bytes = {p}, mtime_ns = {p}, inode = {p}, updated_at = {p}"
        " WHERE path = {p}",
        (size, mtime_ns, inode, stamp, path),
    )


def record(db: Database, entry: LedgerEntry) -> None:
    """Insert or update a file's row (an update keeps its first_seen_at)."""
    updated = (
        "sha256",
        "size_bytes",
        "outcome",
        "faces",
        "message",
        "model_name",
        "detector_backend",
        "seconds",
        "updated_at",
        "mtime_ns",
        "inode",
        "settings",
    )
    values = tuple(getattr(entry, name) for name in updated)
    cursor = db.execute(
        "UPDATE ingest_ledger SET "
        + ", ".join(f"{name} = {{p}}" for name in updated)
        + " WHERE path = {p}",
        values + (entry.path,),
    )
    if cursor.rowcount == 0:
        insert(db, entry)


def insert(db: Database, entry: LedgerEntry) -> None:
    db.execute(
        f"INSERT INTO ingest_ledger ({', '.join(_COLUMNS)})"
        f" VALUES ({db.dialect.params(len(_COLUMNS))})",
        astuple(entry),
    )


def replace(db: Database, entry: LedgerEntry) -> None:
    """Make `entry` the file's row as it is (a copy from another gallery)."""
    delete(db, entry.path)
    insert(db, entry)


def delete(db: Database, path: str) -> None:
    db.execute("DELETE FROM ingest_ledger WHERE path = {p}", (path,))


def _readable_columns(db: Database) -> str:
    """The columns to select: NULL for those an older (unupgraded) gallery lacks."""
    return ", ".join(
        name
        if name not in _NEW_COLUMNS
        or db.scalar(db.dialect.column_exists_sql, ("ingest_ledger", name)) is not None
        else f"NULL AS {name}"
        for name in _COLUMNS
    )


def entries(db: Database) -> list[LedgerEntry]:
    rows = db.query(f"SELECT {_readable_columns(db)} FROM ingest_ledger ORDER BY path")
    return [LedgerEntry(*row) for row in rows]


def summary(db: Database) -> dict[str, object]:
    """Files per outcome, faces counted, and the last update."""
    outcomes = {outcome: 0 for outcome in OUTCOMES}
    for outcome, count in db.query("SELECT outcome, COUNT(*) FROM ingest_ledger GROUP BY outcome"):
        outcomes[outcome] = int(count)
    faces, last = db.execute(
        "SELECT COALESCE(SUM(faces), 0), MAX(updated_at) FROM ingest_ledger"
    ).fetchone()
    return {"outcomes": outcomes, "faces": int(faces), "last_updated_at": last}


def problems(db: Database, limit: int = 100, offset: int = 0) -> tuple[int, list[LedgerEntry]]:
    """(how many, a page of) the files whose last run did not index them, newest first."""
    total = int(db.scalar("SELECT COUNT(*) FROM ingest_ledger WHERE outcome <> 'indexed'"))
    clause, params = db.dialect.limit(limit)
    rows = db.query(
        f"SELECT {_readable_columns(db)} FROM ingest_ledger WHERE outcome <> 'indexed'"
        f" ORDER BY updated_at DESC, path{clause} OFFSET {{p}}",
        params + [int(offset)],
    )
    return total, [LedgerEntry(*row) for row in rows]
