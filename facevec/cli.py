"""The facevec command line: a thin mirror of the Python API."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from . import models, search
from .errors import FacevecError

FORMATS = ("table", "csv", "json")

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) is noise on a command line.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def db_option(required: bool = True) -> Callable:
    return click.option(
        "--db",
        "db",
        required=required,
        type=click.Path(dir_okay=False),
        help="SQLite database file, or a postgresql://, mysql:// or mariadb:// URL.",
    )


def model_option(default: Any = models.DEFAULT_MODEL) -> Callable:
    return click.option(
        "--model",
        "model_name",
        default=default,
        show_default=default is not None,
        help="deepface recognition model (e.g. Dlib, Facenet, ArcFace).",
    )


def detector_option(default: Any = models.DEFAULT_DETECTOR) -> Callable:
    return click.option(
        "--detector",
        "detector_backend",
        default=default,
        show_default=default is not None,
        help="deepface face detector (e.g. dlib, mtcnn, retinaface, skip).",
    )


def metric_option() -> Callable:
    return click.option(
        "--metric",
        "distance_metric",
        type=click.Choice(models.METRICS),
        default="euclidean",
        show_default=True,
        help="Distance metric; deepface's threshold for the model applies.",
    )


def format_option(choices=FORMATS, default: str = "table") -> Callable:  # type: ignore[no-untyped-def]
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(choices),
        default=default,
        show_default=True,
        help="Output format.",
    )


def _fail_cleanly(function: Callable) -> Callable:
    """Print facevec's errors as one line and exit 1, without a traceback."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (FacevecError, FileNotFoundError, NotADirectoryError) as err:
            raise click.ClickException(str(err)) from err
        except _database_errors() as err:
            raise click.ClickException(f"database error: {err}") from err

    return wrapper


def _database_errors() -> tuple[type[BaseException], ...]:
    """The base error classes of the database drivers loaded in this process."""
    names = ("sqlite3", "pysqlite3.dbapi2", "psycopg", "pymysql")
    return tuple(sys.modules[n].Error for n in names if n in sys.modules)


@click.group()
@click.version_option(package_name="facevec")
def cli() -> None:
    """Face recognition on a relational database.

    Index a folder of photos into face embeddings in SQLite, then find a face
    in it or verify two photos.
    """


@cli.command(name="index")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@db_option()
@model_option()
@detector_option()
@click.option("--prune", is_flag=True, help="Remove faces of photos deleted from FOLDER.")
@click.option(
    "--batch-size",
    default=16,
    show_default=True,
    type=click.IntRange(1),
    help="Photos per committed batch.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@format_option(("table", "json"))
@_fail_cleanly
def index_command(
    folder: str,
    db: str,
    model_name: str,
    detector_backend: str,
    prune: bool,
    batch_size: int,
    quiet: bool,
    output_format: str,
) -> None:
    """Index the photos under FOLDER (layout FOLDER/<person>/<photo> names people).

    Unchanged photos are skipped, so rerunning finishes an interrupted run.
    """
    from .ingest import IndexInterrupted, index

    try:
        report = index(
            folder,
            db,
            model_name=model_name,
            detector_backend=detector_backend,
            prune=prune,
            batch_size=batch_size,
            progress=not quiet,
        )
    except IndexInterrupted as stop:
        click.echo(
            f"interrupted: {stop.report.indexed} photos committed; rerun to finish", err=True
        )
        sys.exit(130)
    except KeyboardInterrupt:  # before the first photo: nothing to keep
        click.echo("interrupted: nothing indexed; rerun to start again", err=True)
        sys.exit(130)
    if output_format == "json":
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    click.echo(
        f"{report.files_seen} photos: {report.indexed} indexed ({report.faces_added} faces), "
        f"{report.unchanged} unchanged, {report.no_face} without a face, "
        f"{report.not_image} not images, {report.errors} errors"
        + (f", {report.pruned} pruned" if report.pruned else "")
        + (f", {report.missing} gone (use --prune)" if report.missing else "")
    )
    for message in report.error_messages.values():
        click.echo(f"error: {message}", err=True)


@cli.command(name="find")
@click.argument("img", type=click.Path(exists=True, dir_okay=False))
@db_option()
@click.option(
    "--strategy",
    type=click.Choice(search.STRATEGIES),
    default=None,
    help="Where distances are computed [default: extension on SQLite, relational on a server].",
)
@metric_option()
@click.option("--k", type=click.IntRange(1), default=None, help="At most K matches per face.")
@click.option("--threshold", type=float, default=None, help="Override deepface's threshold.")
@click.option(
    "--similarity-search",
    is_flag=True,
    help="Rank every face, not only those within the threshold (use with --k).",
)
@model_option(default=None)
@detector_option(default=None)
@format_option()
@_fail_cleanly
def find_command(
    img: str,
    db: str,
    strategy: str,
    distance_metric: str,
    k: int,
    threshold: float,
    similarity_search: bool,
    model_name: str,
    detector_backend: str,
    output_format: str,
) -> None:
    """Find the faces in the database that match each face in IMG."""
    from .pipeline import find

    frames = find(
        img,
        db,
        strategy=strategy,
        distance_metric=distance_metric,
        threshold=threshold,
        k=k,
        similarity_search=similarity_search,
        model_name=model_name,
        detector_backend=detector_backend,
    )
    _print_frames(frames, output_format)


def _print_frames(frames: list[Any], output_format: str) -> None:
    import pandas as pd

    if output_format == "json":
        click.echo(
            json.dumps([json.loads(frame.to_json(orient="records")) for frame in frames], indent=2)
        )
        return
    if output_format == "csv":
        combined = pd.concat(
            [frame.assign(query_face=number) for number, frame in enumerate(frames)],
            ignore_index=True,
        )
        click.echo(combined.to_csv(index=False), nl=False)
        return
    columns = ["img_name", "identity", "face_index", "distance", "verified"]
    for number, frame in enumerate(frames):
        if len(frames) > 1:
            first = frame.iloc[0] if len(frame) else None
            where = "" if first is None else f" at x={first.source_x} y={first.source_y}"
            click.echo(f"query face {number}{where}:")
        if frame.empty:
            click.echo("no match within the threshold")
        else:
            click.echo(frame[columns].to_string(index=False))


@cli.command(name="verify")
@click.argument("img1", type=click.Path(exists=True, dir_okay=False))
@click.argument("img2", type=click.Path(exists=True, dir_okay=False))
@model_option()
@detector_option()
@metric_option()
@click.option("--threshold", type=float, default=None, help="Override deepface's threshold.")
@format_option(("table", "json"))
@_fail_cleanly
def verify_command(
    img1: str,
    img2: str,
    model_name: str,
    detector_backend: str,
    distance_metric: str,
    threshold: float,
    output_format: str,
) -> None:
    """Tell whether IMG1 and IMG2 show the same person (exit 0 either way)."""
    from .pipeline import verify

    result = verify(
        img1,
        img2,
        model_name=model_name,
        detector_backend=detector_backend,
        distance_metric=distance_metric,
        threshold=threshold,
    )
    if output_format == "json":
        click.echo(json.dumps(result, indent=2))
        return
    verdict = "same person" if result["verified"] else "different people"
    click.echo(
        f"{verdict}: {distance_metric} distance {result['distance']:.6f} "
        f"{'<=' if result['verified'] else '>'} threshold {result['threshold']}"
    )


@cli.command(name="info")
@db_option()
@format_option(("table", "json"))
@_fail_cleanly
def info_command(db: str, output_format: str) -> None:
    """Show the model, counts and ingest outcomes of a database."""
    from .pipeline import info

    details = info(db)
    if output_format == "json":
        click.echo(json.dumps(details, indent=2))
        return
    for key, value in details.items():
        if key == "ledger":
            value = ", ".join(f"{outcome} {count}" for outcome, count in value.items())
        click.echo(f"{key}: {value}")


@cli.command(name="copy")
@click.argument("source")
@click.argument("target")
@_fail_cleanly
def copy_command(source: str, target: str) -> None:
    """Copy the gallery in SOURCE into TARGET (SQLite paths or database URLs).

    Vectors, metadata, face crops and the ingest ledger are copied, never
    re-embedded; rerunning finishes an interrupted copy without duplicates.
    """
    from .transfer import copy_gallery

    copied = copy_gallery(source, target)
    click.echo(
        f"copied {copied['faces']} faces of {copied['images']} images "
        f"and {copied['ledger']} ledger rows"
    )


@cli.command(name="reindex")
@db_option()
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_fail_cleanly
def reindex_command(db: str, quiet: bool) -> None:
    """(Re)build the knn index of a SQLite database (find --strategy knn).

    index keeps it current by itself; use this for a database filled otherwise,
    or to reclaim the space of deleted faces.
    """
    from .pipeline import reindex

    faces = reindex(db, progress=not quiet)
    click.echo(f"knn index: {faces} faces")


@cli.command(name="extension-path")
def extension_path_command() -> None:
    """Print the path of the SQLite extension, for .load in the sqlite3 shell."""
    import facevec

    click.echo(facevec.loadable_path())


if __name__ == "__main__":  # python -m facevec.cli
    cli()
