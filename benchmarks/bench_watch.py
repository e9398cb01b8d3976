"""facevec watch: the catch-up over unchanged files at start, and the delay of a change.

    python benchmarks/bench_watch.py --files 100000    # catch-up over N unchanged files
    python benchmarks/bench_watch.py --latency 5       # a photo copied in: until committed

The catch-up (a watcher's start after a crash or a reboot) is timed side by side with
a plain `index` rerun over the same files and with the floor, `os.walk` plus one
`os.stat` per file (what any rescan that trusts stats must do), then once more after
a folder of 1,000 files was renamed while nothing watched (their faces follow them:
nothing is read but the ledger). The files are small and not photos (a final
'not_image' row each, as an indexed photo has a final row), so the first run is quick;
the catch-up does what it does for photos.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = Path(os.environ.get("FACEVEC_FACES") or ROOT.parent / "shared" / "faces")


def make_files(folder: Path, count: int) -> None:
    for start in range(0, count, 1000):
        part = folder / f"{start // 1000:04d}"
        part.mkdir(parents=True)
        for number in range(start, min(count, start + 1000)):
            (part / f"{number:06d}.jpg").write_bytes(number.to_bytes(4, "big") * 64)


def floor(folder: Path) -> int:
    seen = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            os.stat(os.path.join(root, name))
            seen += 1
    return seen


def timed(function, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def catch_up(count: int, rounds: int) -> None:
    import facevec
    from facevec.ingest import photo
    from facevec.ingest.watch import Watcher

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "library"
        make_files(folder, count)
        db = Path(scratch) / "watch.db"
        _, first, _ = timed(facevec.index, folder, db, progress=False, workers=1)
        print(f"{count} files in {count // 1000 or 1} folders; first index run {first:.1f} s")
        reads: list[str] = []
        original = photo.read
        photo.read = lambda path: reads.append(path) or original(path)  # type: ignore[assignment]
        watcher = Watcher([folder], db, workers=1)
        watcher._choose_model()
        spellings = watcher.spellings[0]
        results: dict[str, list[tuple[float, float]]] = {"floor": [], "index": [], "catch-up": []}
        for _ in range(rounds):
            for name, run in (
                ("floor", lambda: floor(folder)),
                ("index", lambda: facevec.index(folder, db, progress=False, workers=1, prune=True)),
                ("catch-up", lambda: watcher.catch_up(spellings)),
            ):
                _, wall, cpu = timed(run)
                results[name].append((wall, cpu))
        print("| run | wall s (median) | CPU s (median) | ratio to the floor (wall) |")
        print("|---|---:|---:|---:|")
        base = statistics.median(w for w, _ in results["floor"])
        for name, values in results.items():
            wall = statistics.median(w for w, _ in values)
            cpu = statistics.median(c for _, c in values)
            print(f"| {name} | {wall:.2f} | {cpu:.2f} | {wall / base:.2f} |")
        print(f"files read by index and catch-up: {len(reads)}")
        os.rename(folder / "0000", folder / "renamed")
        report, wall, cpu = timed(watcher.catch_up, spellings)
        print(
            f"after renaming a folder of {min(count, 1000)} files: catch-up {wall:.2f} s wall, "
            f"{cpu:.2f} s CPU, {report.pruned} removed, {report.not_image} redone, "
            f"{len(reads)} files read"
        )
        photo.read = original  # type: ignore[assignment]


def latency(rounds: int, photos: Path, settle: float) -> None:
    """A photo copied into a watched folder: seconds until its ledger row is committed."""
    import sqlite3

    from facevec.ingest.watch import Watcher

    names = sorted(p.name for p in photos.glob("img*.jpg") if p.stat().st_size < 200_000)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "library"
        folder.mkdir()
        db = Path(scratch) / "watch.db"
        watcher = Watcher([folder], db, workers=1, settle=settle)
        thread = threading.Thread(target=watcher.run, daemon=True)
        thread.start()
        watcher.ready.wait(300)
        delays = []
        for name in names[:rounds]:
            target = folder / name
            started = time.perf_counter()
            shutil.copy(photos / name, target)
            while True:
                with sqlite3.connect(db, timeout=30) as conn:
                    row = conn.execute(
                        "SELECT seconds FROM ingest_ledger WHERE path = ?", (str(target),)
                    ).fetchone()
                if row:
                    break
                time.sleep(0.02)
            delays.append((time.perf_counter() - started, row[0]))
        watcher.stop()
        thread.join(60)
    for (delay, embed), name in zip(delays, names[: len(delays)], strict=True):
        print(f"{name}: committed after {delay:.2f} s (embedding {embed:.2f} s, settle {settle} s)")
    print(f"median {statistics.median(d for d, _ in delays):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=0, help="catch-up over N unchanged files")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=int, default=0, help="N photos copied in, one by one")
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    args = parser.parse_args()
    if args.files:
        catch_up(args.files, args.rounds)
    if args.latency:
        latency(args.latency, args.folder, args.settle)


if __name__ == "__main__":
    main()
