"""Files moved or renamed keep their faces: the faces' rows (same ids, so their
people, confirmations, rejections and edit history stay) and the ledger row go
to the new path. Used by the watcher (events and its catch-up) and by index."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from ..storage import faces, ledger
from ..storage.database import Database
from . import photo
from .names import path_from_text, path_to_text
from .walk import Walk, readable

# Outcomes that stay valid while the file's bytes do not change; 'error' is retried.
FINAL_OUTCOMES = ("indexed", "no_face", "not_image")


def identity_of(prefix: str, text_path: str) -> str | None:
    """The person folder of a stored path, as index records it (its parent folder
    under the watched one; None at the top)."""
    parts = text_path[len(prefix) :].split("/")
    return parts[-2] if len(parts) > 1 else None


def carry_rows(
    database: Database, pairs: list[tuple[str, str]], prefix: str
) -> list[tuple[str, str]]:
    """Move each (source, target) file's faces and ledger row to the target path, in
    order (a row moved on by a later pair follows it), in one transaction; a source
    without a final outcome (never indexed, or an error) carries nothing. Returns
    the pairs carried."""
    carried = []
    with database.transaction():
        for source, target in pairs:
            row = ledger.rows_at(database, [source]).get(source)
            if row is None or row.outcome not in FINAL_OUTCOMES or source == target:
                continue
            identity = identity_of(prefix, target) if target.startswith(prefix) else None
            faces.move_stored_image(database, source, target, identity)
            ledger.delete(database, source)
            ledger.replace(database, dataclasses.replace(row, path=target))
            carried.append((source, target))
    return carried


def carry_moved_away(
    database: Database,
    folder: str,
    within: Sequence[str | os.PathLike[str]] | None,
) -> list[tuple[str, str]]:
    """Files moved while nothing watched: each new file whose inode, size and
    modification time (or size and content hash) are those of a vanished file's
    ledger row takes over that file's faces and row. Returns the (vanished, new)
    pairs carried."""
    prefix = path_to_text(folder.rstrip(os.sep) + os.sep)
    # Most starts find every recorded file in place: a look at each, no walk.
    vanished = [
        text
        for text in ledger.paths_under(database, prefix)
        if not os.path.lexists(path_from_text(text))
    ]
    if not vanished:
        return []
    walk = Walk(folder)
    listed = {path_to_text(path): path for path in walk.photos()}
    gone = {
        text: seen
        for text, seen in ledger.entries_at(database, vanished).items()
        if text not in listed and seen.outcome in FINAL_OUTCOMES and walk.saw(text)
    }
    if not gone:
        return []
    recorded = set(ledger.paths_under(database, prefix))
    roots = None if within is None else tuple(os.path.realpath(r) for r in within)
    new = {text: path for text, path in listed.items() if text not in recorded}
    pairs = matching_moves(gone, new, roots)
    return carry_rows(database, pairs, prefix) if pairs else []


def matching_moves(
    gone: dict[str, ledger.Seen], new: dict[str, str], roots: tuple[str, ...] | None
) -> list[tuple[str, str]]:
    """(vanished path, new path) of each new file (text: path) whose inode, size and
    modification time, or else size and content hash, are those of a vanished file's
    ledger row (`gone`, final outcomes only)."""
    by_size: dict[int | None, list[str]] = {}
    for text, seen in gone.items():
        by_size.setdefault(seen.size_bytes, []).append(text)
    pairs = []
    for text, path in new.items():
        try:
            path = readable(path, roots)
            status = photo.stat_of(path)
        except OSError:
            continue  # the rescan reports it
        candidates = by_size.get(status.st_size, [])
        match = next(
            (
                source
                for source in candidates
                if (gone[source].inode, gone[source].mtime_ns)
                == (status.st_ino, status.st_mtime_ns)
            ),
            None,
        )
        if match is None and candidates:
            try:
                sha256 = photo.sha256_of(photo.read(path))
            except OSError:
                continue
            match = next((s for s in candidates if gone[s].sha256 == sha256), None)
        if match is not None:
            candidates.remove(match)
            pairs.append((match, text))
    return pairs
