"""Ingest speed: facevec index (1 and 2 workers) vs DeepFace.represent on the same photos.

Each contender runs in a fresh process of its own (its peak memory is its own), the
contenders interleaved over several rounds (the order turns each round), since other
work on the machine comes and goes: medians are compared, in wall time and in CPU
time (the process and its workers), which other load moves far less.

- deepface-represent: a plain DeepFace.represent loop (the baseline);
- facevec-1, facevec-2: facevec index, default path, --workers 1 and 2;
- with --all, also facevec index --exact (deepface's own detection) and
  DeepFace.find building its datastore.

Same photos, model and detector; each process loads its models before the clock
starts (facevec's worker processes load theirs inside index: that start-up is
reported apart; "seconds" leaves it out, "with start-up" keeps it).

    python benchmarks/bench_ingest.py [--folder ../shared/faces] [--limit 12] [--rounds 3]
    python benchmarks/bench_ingest.py --profile   # where facevec's time goes, per step
    python benchmarks/bench_ingest.py --faces     # faces per photo against deepface's
    python benchmarks/bench_ingest.py --rescan 100000   # a rerun over N unchanged files
"""

from __future__ import annotations

import argparse
import cProfile
import glob
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_FOLDER = Path(
    os.environ.get("FACEVEC_FACES") or Path(__file__).resolve().parents[2] / "shared" / "faces"
)
CONTENDERS = ("deepface-represent", "facevec-1", "facevec-2")
MORE = ("facevec-exact", "deepface-find")


def photo_names(folder: Path, limit: int | None) -> list[str]:
    names = sorted(os.path.basename(p) for p in glob.glob(str(folder / "*.jpg")))
    return names[:limit] if limit else names


def symlink_folder(folder: Path, names: list[str], target: Path) -> Path:
    # DeepFace.find writes its datastore into the photo folder: give it a private one.
    target.mkdir(parents=True)
    for name in names:
        (target / name).symlink_to(folder / name)
    return target


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_contender(name: str, folder: Path, names: list[str], model: str, detector: str) -> dict:
    """One contender in this process; its figures as a dict."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from facevec.engine import models
    from facevec.options import EmbedOptions

    exact = name == "facevec-exact"
    if name.startswith("deepface"):
        models.build_model(model, detector)  # load once, outside the timings
    else:
        models.prepare(EmbedOptions(model, detector, exact=exact))
    for photo in names:  # the same page cache for everyone
        (folder / photo).read_bytes()
    figures: dict = {"contender": name, "photos": len(names)}
    with tempfile.TemporaryDirectory() as scratch:
        gallery = symlink_folder(folder, names, Path(scratch) / "photos")
        cpu = cpu_seconds()
        if name.startswith("facevec"):
            import facevec

            workers = 2 if name == "facevec-2" else 1
            report = facevec.index(
                gallery,
                Path(scratch) / "bench.db",
                model_name=model,
                detector_backend=detector,
                progress=False,
                workers=workers,
                exact=exact,
            )
            figures.update(
                seconds=report.seconds_total - report.seconds_startup,
                with_startup=report.seconds_total,
                startup=report.seconds_startup,
                faces=report.faces_added,
                dropped=report.faces_dropped,
                database=report.seconds_database,
            )
        elif name == "deepface-find":
            from deepface import DeepFace

            options = dict(
                db_path=str(gallery),
                model_name=model,
                detector_backend=detector,
                distance_metric="euclidean",
                silent=True,
            )
            query = str(gallery / names[0])
            started = time.perf_counter()
            DeepFace.find(img_path=query, **options)  # builds the representations, then searches
            first = time.perf_counter() - started
            started = time.perf_counter()
            DeepFace.find(img_path=query, **options)  # representations stored: the search alone
            figures.update(seconds=first - (time.perf_counter() - started))
        else:
            from deepface import DeepFace

            faces = 0
            started = time.perf_counter()
            for photo in names:
                faces += len(
                    DeepFace.represent(
                        str(gallery / photo), model_name=model, detector_backend=detector
                    )
                )
            figures.update(seconds=time.perf_counter() - started, faces=faces)
        figures["cpu"] = cpu_seconds() - cpu
    figures.setdefault("with_startup", figures["seconds"])
    figures["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figures["worker_rss_mb"] = children if name == "facevec-2" else None
    figures["load"] = os.getloadavg()[0]
    return figures


def _spawn(contender: str, args: argparse.Namespace) -> dict:
    run = subprocess.run(
        [
            sys.executable,
            __file__,
            "--contender",
            contender,
            "--folder",
            str(args.folder),
            "--limit",
            str(args.limit),
            "--model",
            args.model,
            "--detector",
            args.detector,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(run.stdout.splitlines()[-1])


def compare(args: argparse.Namespace, names: list[str]) -> None:
    contenders = CONTENDERS + (MORE if args.all else ())
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for round_number in range(args.rounds):
        shift = round_number % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            runs[contender].append(_spawn(contender, args))
    n = len(names)

    def median(contender: str, key: str) -> float:
        return statistics.median(figures[key] for figures in runs[contender])

    base_wall = median("deepface-represent", "seconds")
    base_cpu = median("deepface-represent", "cpu")
    loads = [figures["load"] for results in runs.values() for figures in results]
    print(
        f"{n} photos, model {args.model}, detector {args.detector}; {args.rounds} rounds "
        f"interleaved; os.cpu_count()={os.cpu_count()}; load average "
        f"{min(loads):.1f}-{max(loads):.1f}; medians"
    )
    print(
        f"{'contender':20} {'seconds':>8} {'photos/s':>9} {'speed-up':>9} "
        f"{'w/ start-up':>12} {'CPU s':>7} {'CPU ratio':>10} {'peak RSS MB':>14}"
    )
    for contender in contenders:
        seconds = median(contender, "seconds")
        total = median(contender, "with_startup")
        cpu = median(contender, "cpu")
        last = runs[contender][-1]
        rss = f"{last['rss_mb']:.0f}"
        if last.get("worker_rss_mb"):
            rss += f" + {last['worker_rss_mb']:.0f}"
        print(
            f"{contender:20} {seconds:8.2f} {n / seconds:9.2f} {base_wall / seconds:8.2f}x "
            f"{base_wall / total:11.2f}x {cpu:7.2f} {base_cpu / cpu:9.2f}x {rss:>14}"
        )
    for contender in contenders:
        if contender.startswith("facevec"):
            last = runs[contender][-1]
            print(
                f"{contender}: {last['faces']} faces ({last['dropped']} under the floors), "
                f"start-up {median(contender, 'startup'):.2f} s, "
                f"database {median(contender, 'database'):.3f} s"
            )
    print("speed-up: deepface-represent's median seconds over the contender's (wall);")
    print("w/ start-up: the same with facevec's worker start-up counted;")
    print("CPU ratio: deepface-represent's CPU seconds over the contender's (all processes).")


# Where the time goes ------------------------------------------------------------------

# (step, [(part of cProfile's "file function" label, "cum" or "tot" time)]): dlib's
# shape predictor is a callable object, which cProfile does not list: its time is the
# detector function's own.
STEPS = (
    ("decode", [("decode_photo", "cum")]),
    ("scale a copy for the detector", [("detect.py scaled", "cum")]),
    ("detect (dlib HOG)", [("_dlib_pybind11.run", "cum")]),
    ("landmarks (dlib 5-point)", [("detect.py _detect_dlib", "tot")]),
    (
        "align (crop, rotate, resize)",
        [
            ("_extract_face", "cum"),
            ("model_input", "cum"),
            ("preprocessing.py resize_image", "cum"),
        ],
    ),
    ("embed (dlib ResNet)", [("compute_face_descriptor", "cum")]),
    ("sharpness, model-input PNG", [("sharpness", "cum"), ("_model_input_png", "cum")]),
    ("read and hash", [("photo.py read", "cum"), ("sha256_of", "cum")]),
    ("writes (database)", [("__init__.py flush", "cum")]),
)


def _step_seconds(stats: pstats.Stats, parts: list[tuple[str, str]]) -> float:
    seconds = 0.0
    for (file, _, function), (_, _, tottime, cumtime, callers) in stats.stats.items():  # type: ignore[attr-defined]
        label = f"{os.path.basename(file)} {function}" if file != "~" else function
        for part, kind in parts:
            if part not in label:
                continue
            if kind == "tot":
                seconds += tottime
            elif not any(
                p in (f"{os.path.basename(c[0])} {c[2]}" if c[0] != "~" else c[2])
                for c in callers
                for p, _ in parts
            ):  # the outermost call only: its cumulative time holds the inner ones
                seconds += cumtime
    return seconds


def profile(args: argparse.Namespace, names: list[str]) -> None:
    """One process (--workers 1) under cProfile (CPU time), its time per step; then the
    start-up of two worker processes (wall)."""
    import facevec
    from facevec.engine import models
    from facevec.options import EmbedOptions

    started = time.process_time()
    models.prepare(EmbedOptions(args.model, args.detector))
    load = time.process_time() - started
    with tempfile.TemporaryDirectory() as scratch:
        gallery = symlink_folder(args.folder, names, Path(scratch) / "photos")
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        facevec.index(gallery, Path(scratch) / "p.db", progress=False, workers=1)
        profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(
        f"{len(names)} photos, one process under cProfile: {total:.2f} CPU s "
        f"({total / len(names):.3f} s a photo)"
    )
    print(f"{'step':32} {'CPU s':>8} {'share':>7}")
    counted = 0.0
    for step, parts in STEPS:
        seconds = _step_seconds(stats, parts)
        counted += seconds
        print(f"{step:32} {seconds:8.2f} {seconds / total:7.1%}")
    print(f"{'everything else':32} {total - counted:8.2f} {(total - counted) / total:7.1%}")
    print(f"model and detector load (once per process): {load:.2f} CPU s")
    with tempfile.TemporaryDirectory() as scratch:
        gallery = symlink_folder(args.folder, names[:3], Path(scratch) / "photos")
        report = facevec.index(gallery, Path(scratch) / "s.db", progress=False, workers=2)
    print(f"two worker processes: start-up (spawn, import, load) {report.seconds_startup:.2f} s")


# Faces per photo ----------------------------------------------------------------------


def faces_per_photo(args: argparse.Namespace) -> None:
    """Every photo of the folder: deepface's dlib detections against facevec's stored faces
    (and what its floors dropped)."""
    import sqlite3

    from deepface import DeepFace
    from PIL import Image

    import facevec
    from facevec.engine import models

    models.build_model(args.model, args.detector)
    names = photo_names(args.folder, None)
    theirs = {}
    for name in names:
        path = str(args.folder / name)
        width, height = Image.open(path).size
        found = DeepFace.extract_faces(
            path, detector_backend=args.detector, enforce_detection=False
        )
        # Without a face deepface returns the whole photo (confidence 0): not a detection.
        theirs[name] = [
            (face["facial_area"]["w"], face["confidence"])
            for face in found
            if (face["facial_area"]["w"], face["facial_area"]["h"]) != (width, height)
        ]
    with tempfile.TemporaryDirectory() as scratch:
        gallery = symlink_folder(args.folder, names, Path(scratch) / "photos")
        db = Path(scratch) / "faces.db"
        facevec.index(gallery, db, progress=False)
        with sqlite3.connect(db) as conn:
            ours = {
                os.path.basename(path): (faces, message)
                for path, faces, message in conn.execute(
                    "SELECT path, faces, message FROM ingest_ledger"
                )
            }
    print(
        f"{len(names)} photos: deepface {sum(map(len, theirs.values()))} faces, "
        f"facevec {sum(f for f, _ in ours.values())}"
    )
    print(f"{'photo':28} {'deepface (w, confidence)':40} {'facevec':>7}  ledger message")
    for name in names:
        faces, message = ours[name]
        if faces != len(theirs[name]) or message:
            found = ", ".join(f"{w}px {c:.2f}" for w, c in theirs[name])
            print(f"{name:28} {found:40} {faces:7}  {message or ''}")


# A rescan of unchanged files ---------------------------------------------------------


def rescan(count: int) -> None:
    """The second run over `count` unchanged files: what it costs, and that it reads none.
    The files are small and not photos (a final 'not_image' row each, as an indexed photo
    has a final row), so the first run is quick; the second does what it does for photos."""
    import facevec
    from facevec.ingest import photo

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "library"
        for start in range(0, count, 1000):
            part = folder / f"{start // 1000:04d}"
            part.mkdir(parents=True)
            for number in range(start, min(count, start + 1000)):
                (part / f"{number:06d}.jpg").write_bytes(number.to_bytes(4, "big") * 64)
        db = Path(scratch) / "rescan.db"
        started = time.perf_counter()
        first = facevec.index(folder, db, progress=False, workers=1)
        first_seconds = time.perf_counter() - started
        reads = []
        original = photo.read
        photo.read = lambda path: reads.append(path) or original(path)  # type: ignore[assignment]
        wall, cpu = time.perf_counter(), time.process_time()
        second = facevec.index(folder, db, progress=False, workers=1)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        photo.read = original  # type: ignore[assignment]
    print(
        f"{count} files: first run {first_seconds:.1f} s ({first.not_image} rows); rescan "
        f"{wall:.2f} s wall, {cpu:.2f} s CPU, {second.unchanged} unchanged, {len(reads)} read"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--limit", type=int, default=12, help="the first N photos (0: all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="Dlib")
    parser.add_argument("--detector", default="dlib")
    parser.add_argument("--all", action="store_true", help="also --exact and DeepFace.find")
    parser.add_argument("--profile", action="store_true", help="facevec's time per step")
    parser.add_argument("--faces", action="store_true", help="faces per photo vs deepface")
    parser.add_argument("--rescan", type=int, metavar="N", help="a rerun over N unchanged files")
    parser.add_argument("--contender", choices=CONTENDERS + MORE, help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = photo_names(args.folder, args.limit or None)
    if args.contender:
        figures = run_contender(args.contender, args.folder, names, args.model, args.detector)
        print(json.dumps(figures))
    elif args.profile:
        profile(args, names)
    elif args.faces:
        faces_per_photo(args)
    elif args.rescan:
        rescan(args.rescan)
    else:
        compare(args, names)


if __name__ == "__main__":
    main()
