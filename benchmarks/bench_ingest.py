"""Ingest speed: facevec index (1 and 2 workers) vs deepface on the same photos.

Contenders, each in a fresh process of its own so that peak memory is its own:

- facevec index, default path, --workers 1 and --workers 2;
- facevec index --exact (deepface's own detection), 1 worker;
- DeepFace.find building its datastore (find twice: the first run builds the
  representations, the second only searches; the difference is the build);
- a plain DeepFace.represent loop.

Same photos, model and detector; each process loads its models before the clock
starts (facevec's worker processes load theirs inside index: that start-up is
reported apart and left out of photos/s). Prints photos/s, speed-ups over
deepface, peak RSS per process and facevec's time in the database.

    python benchmarks/bench_ingest.py [--folder ../shared/faces] [--limit 12]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_FOLDER = Path(
    os.environ.get("FACEVEC_FACES") or Path(__file__).resolve().parents[2] / "shared" / "faces"
)
CONTENDERS = ("facevec-1", "facevec-2", "facevec-exact", "deepface-find", "deepface-represent")


def photo_names(folder: Path, limit: int | None) -> list[str]:
    names = sorted(os.path.basename(p) for p in glob.glob(str(folder / "*.jpg")))
    return names[:limit] if limit else names


def symlink_folder(folder: Path, names: list[str], target: Path) -> Path:
    # DeepFace.find writes its datastore into the photo folder: give it a private one.
    target.mkdir(parents=True)
    for name in names:
        (target / name).symlink_to(folder / name)
    return target


def run_contender(name: str, folder: Path, names: list[str], model: str, detector: str) -> dict:
    """One contender in this process; its figures as a dict."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from facevec.engine import models

    models.build_model(model, detector)  # load once, outside the timings
    for photo in names:  # the same page cache for everyone
        (folder / photo).read_bytes()
    figures: dict = {"contender": name, "photos": len(names)}
    with tempfile.TemporaryDirectory() as scratch:
        gallery = symlink_folder(folder, names, Path(scratch) / "photos")
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
                exact=name == "facevec-exact",
            )
            figures.update(
                seconds=report.seconds_total - report.seconds_startup,
                startup=report.seconds_startup,
                faces=report.faces_added,
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
    figures["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figures["worker_rss_mb"] = children if name == "facevec-2" else None
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--limit", type=int, default=12, help="the first N photos (0: all)")
    parser.add_argument("--model", default="Dlib")
    parser.add_argument("--detector", default="dlib")
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = photo_names(args.folder, args.limit or None)
    if args.contender:
        figures = run_contender(args.contender, args.folder, names, args.model, args.detector)
        print(json.dumps(figures))
        return

    results = {}
    for contender in CONTENDERS:
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
        results[contender] = json.loads(run.stdout.splitlines()[-1])
    n = len(names)
    baseline = min(results["deepface-find"]["seconds"], results["deepface-represent"]["seconds"])
    print(
        f"{n} photos, model {args.model}, detector {args.detector}; os.cpu_count()={os.cpu_count()}"
    )
    print(f"{'contender':22} {'seconds':>8} {'photos/s':>9} {'speed-up':>9} {'peak RSS MB':>12}")
    for contender, figures in results.items():
        seconds = figures["seconds"]
        rss = f"{figures['rss_mb']:.0f}"
        if figures.get("worker_rss_mb"):
            rss += f" + workers {figures['worker_rss_mb']:.0f}"
        print(
            f"{contender:22} {seconds:8.2f} {n / seconds:9.2f} {baseline / seconds:8.2f}x {rss:>12}"
        )
    for contender in ("facevec-1", "facevec-2", "facevec-exact"):
        figures = results[contender]
        print(
            f"{contender}: {figures['faces']} faces, "
            f"start-up {figures['startup']:.2f} s (not counted), "
            f"database {figures['database']:.3f} s ({figures['database'] / figures['seconds']:.2%})"
        )
    print("speed-up: over the faster of deepface's two (lower seconds)")


if __name__ == "__main__":
    main()
