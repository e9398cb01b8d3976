"""A folder of results written a block at a time, so an interrupted run resumes.

Layout of ``out/``:

- ``part-BBBBBB-NNNNN.parquet``: the result files of block B, moved into place
  from ``_staging/block-BBBBBB/`` (where Spark wrote them) once the block's job
  has finished;
- ``_facevec_spark_find.json``: the manifest: what the run searched (its
  ``identity``: queries, gallery, parameters), the number of blocks, the blocks
  done with their files and hits, and ``complete`` once every block is;
- ``_SUCCESS`` once complete, as Spark writes it.

A block is committed when the manifest naming it has replaced the previous one
(written to a temporary name, then renamed): files of a block the manifest does
not name are leftovers of an interrupted commit and are removed on resuming.
Names starting with ``_`` are invisible to Spark, pyarrow, pandas and the
``*.parquet`` glob, so readers see the result files only.

Pure Python: the Spark job that fills a staging folder is the caller's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Any

from ..errors import OutputExistsError

MANIFEST = "_facevec_spark_find.json"
STAGING = "_staging"
SUCCESS = "_SUCCESS"
FORMAT = 1

_PART = re.compile(r"part-(\d{6})-\d{5}\.parquet$")


@dataclass
class BlockOutput:
    """An output folder being filled block by block; :func:`open_output` makes one."""

    path: str
    identity: dict[str, Any]
    blocks: int | None = None
    done: dict[int, dict[str, Any]] = field(default_factory=dict)
    resumed: int = 0  # blocks found done when the folder was opened

    def plan(self, blocks: int, counts: dict[str, Any]) -> None:
        """Record the number of blocks and what numbering the queries told
        (e.g. how many there are); a resumed run must find the same."""
        if self.blocks is not None:
            before = {key: self.identity.get(key) for key in counts}
            if before != counts or blocks != self.blocks:
                key = next((k for k in counts if before[k] != counts[k]), "blocks")
                was = self.blocks if key == "blocks" else before[key]
                now = blocks if key == "blocks" else counts[key]
                raise OutputExistsError(
                    f"{self.path} holds an unfinished search of other queries ({key}: "
                    f"{was} there, {now} now); add --overwrite to start over"
                )
        self.identity.update(counts)
        self.blocks = blocks
        self._write()

    def todo(self) -> list[int]:
        assert self.blocks is not None, "plan() first"
        return [block for block in range(self.blocks) if block not in self.done]

    def staging(self, block: int) -> str:
        """An empty folder for block's files, out of readers' sight."""
        folder = os.path.join(self.path, STAGING, f"block-{block:06d}")
        shutil.rmtree(folder, ignore_errors=True)
        return folder

    def commit(self, block: int) -> list[str]:
        """Move block's Parquet files from its staging folder into place, then
        record it done (with its hits, from the files' footers): the block
        counts from that rename of the manifest on."""
        import pyarrow.parquet as pq

        folder = os.path.join(self.path, STAGING, f"block-{block:06d}")
        parts = sorted(
            name
            for name in os.listdir(folder)
            if name.endswith(".parquet") and not name.startswith((".", "_"))
        )
        names, hits = [], 0
        for number, name in enumerate(parts):
            hits += pq.read_metadata(os.path.join(folder, name)).num_rows
            final = f"part-{block:06d}-{number:05d}.parquet"
            os.replace(os.path.join(folder, name), os.path.join(self.path, final))
            names.append(final)
        self.done[block] = {"files": names, "hits": hits}
        self._write()
        shutil.rmtree(folder, ignore_errors=True)
        return names

    def finish(self) -> None:
        """Every block done: mark the folder complete and write _SUCCESS."""
        assert self.blocks is not None and not self.todo(), "blocks left to do"
        shutil.rmtree(os.path.join(self.path, STAGING), ignore_errors=True)
        self._write(complete=True)
        with open(os.path.join(self.path, SUCCESS), "wb"):
            pass

    @property
    def hits(self) -> int:
        return sum(entry["hits"] for entry in self.done.values())

    def _write(self, complete: bool = False) -> None:
        manifest = {
            "format": FORMAT,
            "identity": self.identity,
            "blocks": self.blocks,
            "done": {str(block): entry for block, entry in sorted(self.done.items())},
            "complete": complete,
        }
        target = os.path.join(self.path, MANIFEST)
        temporary = target + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)


def check_output(path: str, overwrite: bool = False) -> None:
    """Refuse at once what :func:`open_output` would refuse whatever the run:
    `path` existing without an unfinished run's manifest, or with a finished one."""
    if overwrite or not os.path.lexists(path):
        return
    manifest = _read_manifest(path)
    if manifest is None:
        raise OutputExistsError(f"{path} exists; choose another --out or add --overwrite")
    if manifest.get("complete"):
        raise OutputExistsError(
            f"{path} exists and holds a finished search; choose another --out or add --overwrite"
        )


def open_output(path: str, identity: dict[str, Any], overwrite: bool = False) -> BlockOutput:
    """The output folder at `path` for a run described by `identity` (JSON values):
    new (created), or the unfinished run of the same identity (resumed, its
    interrupted commits cleared). Anything else at `path` is refused unless
    `overwrite`, which removes it."""
    identity = json.loads(json.dumps(identity))  # as the manifest will hold it
    if os.path.lexists(path) and overwrite:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    if not os.path.lexists(path):
        os.makedirs(path)
        output = BlockOutput(path, identity)
        output._write()
        return output
    check_output(path)
    manifest = _read_manifest(path)
    assert manifest is not None
    before = manifest.get("identity") or {}
    for key in identity:
        if before.get(key) != identity[key]:
            raise OutputExistsError(
                f"{path} holds an unfinished search with another {key} ({before.get(key)!r} "
                f"there, {identity[key]!r} now); run the same search to resume it, or add "
                "--overwrite to start over"
            )
    identity = {**before, **identity}
    done = {int(block): entry for block, entry in (manifest.get("done") or {}).items()}
    output = BlockOutput(path, identity, manifest.get("blocks"), done, resumed=len(done))
    _clear_leftovers(output)
    return output


def _read_manifest(path: str) -> dict[str, Any] | None:
    location = os.path.join(path, MANIFEST)
    if not os.path.isdir(path) or not os.path.isfile(location):
        return None
    try:
        with open(location, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as err:
        raise OutputExistsError(
            f"{path} holds an unreadable {MANIFEST} ({err}); add --overwrite to start over"
        ) from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise OutputExistsError(
            f"{path} holds a {MANIFEST} of another format; add --overwrite to start over"
        )
    return manifest


def _clear_leftovers(output: BlockOutput) -> None:
    """Remove the staging folders and the files of blocks not committed."""
    shutil.rmtree(os.path.join(output.path, STAGING), ignore_errors=True)
    kept = {name for entry in output.done.values() for name in entry.get("files", ())}
    for name in os.listdir(output.path):
        if _PART.match(name) and name not in kept:
            os.remove(os.path.join(output.path, name))
