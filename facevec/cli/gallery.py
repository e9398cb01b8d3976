"""The gallery commands: index, find, verify, info, copy, reindex, extension-path."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..search import STRATEGIES
from .main import (
    NUMBER_THRESHOLD,
    THRESHOLD,
    alias,
    batch_size_option,
    cli,
    db_option,
    detector_option,
    face_filter_options,
    fail_cleanly,
    format_option,
    metric_option,
    model_option,
    workers_option,
)
from .output import echo, echo_frame, echo_json, printable, warnings_as_lines


@cli.command(name="index")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@db_option()
@model_option()
@detector_option()
@click.option("--prune", is_flag=True, help="Remove faces of photos deleted from FOLDER.")
@batch_size_option
@workers_option
@face_filter_options
@click.option(
    "--people-from-folders",
    is_flag=True,
    help="Each subfolder becomes a person (FOLDER/<person>/<photo>); a gallery that has "
    "folder people keeps making them. Without it a folder is only the identity column.",
)
@click.option(
    "--no-people",
    "people",
    is_flag=True,
    flag_value=False,
    default=True,
    help="No people step at the end (by default new faces are recognised as known people "
    "and the rest grouped into new people).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@format_option(("table", "json"))
@fail_cleanly
def index_command(
    folder: str,
    db: str,
    model_name: str,
    detector_backend: str,
    prune: bool,
    batch_size: int,
    workers: int | None,
    exact: bool,
    max_pixels: int,
    min_face: int,
    min_sharpness: float,
    min_confidence: float | None,
    people_from_folders: bool,
    people: bool,
    quiet: bool,
    output_format: str,
) -> None:
    """Index the photos under FOLDER; then recognise the new faces as known people
    and group the rest (--no-people: not). Folders are people with --people-from-folders.

    Unchanged photos are skipped, so rerunning finishes an interrupted run.
    """
    from ..ingest import IndexInterrupted, index

    try:
        report = index(
            folder,
            db,
            model_name=model_name,
            detector_backend=detector_backend,
            prune=prune,
            batch_size=batch_size,
            progress=not quiet,
            exact=exact,
            workers=workers,
            max_pixels=max_pixels,
            min_face=min_face,
            min_sharpness=min_sharpness,
            min_confidence=min_confidence,
            people_from_folders=people_from_folders,
            people=people,
        )
    except IndexInterrupted as stop:
        echo(f"interrupted: {stop.report.indexed} photos committed; rerun to finish", err=True)
        sys.exit(130)
    except KeyboardInterrupt:  # before the first photo: nothing to keep
        echo("interrupted: nothing indexed; rerun to start again", err=True)
        sys.exit(130)
    if output_format == "json":
        echo_json(json.dumps(report.as_dict(), indent=2))
        return
    echo(
        f"{report.files_seen} photos: {report.indexed} indexed ({report.faces_added} faces), "
        f"{report.unchanged} unchanged, {report.no_face} without a face, "
        f"{report.not_image} not images, {report.errors} errors"
        + (
            f", {report.faces_dropped} faces below --min-confidence/--min-face/--min-sharpness"
            if report.faces_dropped
            else ""
        )
        + (f", {report.moved} moved" if report.moved else "")
        + (f", {report.pruned} pruned" if report.pruned else "")
        + (f", {report.missing} gone (use --prune)" if report.missing else "")
        + (f", {report.unseen} in unreadable folders (kept)" if report.unseen else "")
    )
    if report.people is not None:
        echo(f"people: {report.people.summary}")
    for message in report.error_messages.values():
        echo(f"error: {printable(message)}", err=True)


@cli.command(name="find")
@click.argument("img", type=click.Path(exists=True, dir_okay=True))
@db_option()
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    default=None,
    help="Where distances are computed [default: chosen by the gallery's size, indexes and "
    "number of queries; facevec info says which and why].",
)
@metric_option()
@click.option("--k", type=click.IntRange(1), default=None, help="At most K matches per face.")
@click.option(
    "--threshold",
    type=THRESHOLD,
    default=None,
    help="Override deepface's threshold: a number, or 'calibrated' (facevec calibrate).",
)
@click.option(
    "--similarity-search",
    is_flag=True,
    help="Rank every face, not only those within the threshold (use with --k).",
)
@model_option(default=None)
@detector_option(default=None)
@click.option(
    "--exact",
    is_flag=True,
    help="Detect with deepface's own code (as index --exact); several times slower.",
)
@click.option(
    "--nprobe",
    type=click.IntRange(1),
    default=None,
    help="IVF lists searched: the knn index's (SQLite) or the gallery's lists "
    "(relational, client) [default: the knn index's own; 1/128 of the lists, at least 8].",
)
@format_option()
@fail_cleanly
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
    exact: bool,
    nprobe: int | None,
    output_format: str,
) -> None:
    """Find the faces in the database that match each face in IMG (a photo, or a
    folder: every photo in it, searched in one batch)."""
    from ..recognize import find

    with warnings_as_lines():
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
            exact=exact,
            nprobe=nprobe,
        )
    _print_frames(frames, output_format)
    if strategy in ("relational", "client"):
        _note_probed_lists(db, nprobe)


def _note_probed_lists(db: str, nprobe: int | None) -> None:
    """Say so when the gallery's IVF lists made the search approximate."""
    from ..lists import list_status

    status = list_status(db)
    if status is None:
        return
    probed = status["default_nprobe"] if nprobe is None else nprobe
    if probed < status["lists"]:
        echo(
            f"note: approximate search of {probed} of the gallery's {status['lists']} IVF "
            f"lists (--nprobe {status['lists']} searches every face; reindex --lists 0 "
            "removes the lists)",
            err=True,
        )


def _print_frames(frames: list[Any], output_format: str) -> None:
    import pandas as pd

    if output_format == "json":
        echo_json(
            json.dumps([json.loads(frame.to_json(orient="records")) for frame in frames], indent=2)
        )
        return
    if output_format == "csv":
        combined = pd.concat(
            [frame.assign(query_face=number) for number, frame in enumerate(frames)],
            ignore_index=True,
        )
        echo_frame(combined, "csv")
        return
    columns = ["img_name", "identity", "face_index", "distance", "verified"]
    for number, frame in enumerate(frames):
        if len(frames) > 1:
            first = frame.iloc[0] if len(frame) else None
            where = "" if first is None else f" at x={first.source_x} y={first.source_y}"
            photo = frame.attrs.get("img")
            echo(f"{printable(photo) + ': ' if photo else ''}query face {number}{where}:")
        echo_frame(frame[columns], "table", empty="no match within the threshold")


@cli.command(name="verify")
@click.argument("img1", type=click.Path(exists=True, dir_okay=False))
@click.argument("img2", type=click.Path(exists=True, dir_okay=False))
@model_option()
@detector_option()
@metric_option()
@click.option(
    "--threshold",
    type=NUMBER_THRESHOLD,
    default=None,
    help="Override deepface's threshold (inf: always the same person).",
)
@click.option(
    "--exact",
    is_flag=True,
    help="Detect with deepface's own code (as index --exact); several times slower.",
)
@format_option(("table", "json"))
@fail_cleanly
def verify_command(
    img1: str,
    img2: str,
    model_name: str,
    detector_backend: str,
    distance_metric: str,
    threshold: float,
    exact: bool,
    output_format: str,
) -> None:
    """Tell whether IMG1 and IMG2 show the same person (exit 0 either way)."""
    from ..recognize import verify

    result = verify(
        img1,
        img2,
        model_name=model_name,
        detector_backend=detector_backend,
        distance_metric=distance_metric,
        threshold=threshold,
        exact=exact,
    )
    if output_format == "json":
        echo_json(json.dumps(result, indent=2))
        return
    verdict = "same person" if result["verified"] else "different people"
    echo(
        f"{verdict}: {distance_metric} distance {result['distance']:.6f} "
        f"{'<=' if result['verified'] else '>'} threshold {result['threshold']}"
    )


@cli.command(name="info")
@db_option()
@format_option(("table", "json"))
@fail_cleanly
def info_command(db: str, output_format: str) -> None:
    """Show the model, counts and ingest outcomes of a database."""
    from ..gallery_info import info

    details = info(db)
    if output_format == "json":
        echo_json(json.dumps(details, indent=2))
        return
    for key, value in details.items():
        if key == "ledger":
            value = ", ".join(f"{outcome} {count}" for outcome, count in value.items())
        elif key == "ivf_lists" and value:
            value = (
                f"{value['lists']} lists ({value['metric']}), faces per list "
                f"{value['smallest']} to {value['largest']} (median {value['median']:g}), "
                f"{value['unassigned']} in no list, default nprobe {value['default_nprobe']}"
                + (f"; retrain advised: {value['retrain']}" if value["retrain"] else "")
            )
        elif key == "search_plan":
            value = "; ".join(
                f"{what.replace('_', ' ')}: {step['strategy']}"
                f"{' (batch)' if step['batch'] else ''}"
                f"{'' if step['exact'] else ' (approximate)'}, {step['reason']}"
                for what, step in value.items()
            )
        elif key == "invalid_faces":
            value = (
                "none"
                if not value
                else f"{len(value)} that facevec would not store today: "
                + "; ".join(
                    f"face {row['face_id']} ({row['img_name']!r}, face {row['face_index']}) "
                    f"{row['reason']}"
                    for row in value
                )
            )
        echo(f"{key}: {value}")


@cli.command(name="copy")
@click.argument("source")
@click.argument("target")
@click.option(
    "--no-people",
    "no_people",
    is_flag=True,
    help="Copy the faces only, into a TARGET that has people of its own.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@fail_cleanly
def copy_command(source: str, target: str, no_people: bool, quiet: bool) -> None:
    """Copy the gallery in SOURCE into TARGET (SQLite paths or database URLs).

    Vectors, metadata, face crops, the ingest ledger and the people (names, who
    each face is and who said so, rejections, hidden people, cover faces, faces
    set aside, calibration) are copied, never re-embedded. The people history
    (undo) stays behind. A TARGET holding other people is refused before anything
    is written (--no-people leaves the people behind, folder people are made
    again). Rerunning finishes an interrupted copy without duplicates.
    """
    from ..transfer import copy_gallery

    copied = copy_gallery(source, target, progress=not quiet, people=not no_people)
    echo(
        f"copied {copied['faces']} faces of {copied['images']} images, "
        f"{copied['ledger']} ledger rows and {copied['people']} people"
        + (
            f"; left out {copied['skipped']} faces whose vectors are unstorable"
            if copied["skipped"]
            else ""
        )
    )


@cli.command(name="reindex")
@db_option()
@click.option(
    "--lists",
    "n_lists",
    type=click.IntRange(0),
    default=None,
    help="Train this many IVF lists and put every face in one: the gallery's lists "
    "(relational, client; any database) and, on SQLite, the knn index's; 0 = no lists: "
    "the gallery's lists removed and an exact knn index, every search exact "
    "[default: the knn index stays as it is: exact under 100,000 faces, else "
    "about the square root of the faces].",
)
@click.option(
    "--lists-metric",
    type=click.Choice(["euclidean", "cosine", "euclidean_l2"]),
    default="euclidean",
    show_default=True,
    help="The metric the lists are trained for.",
)
@click.option(
    "--blobs-only/--embedding-rows",
    "blobs_only",
    default=None,
    help="Empty face_embeddings (client strategy only) or fill it again.",
)
@click.option(
    "--storage",
    type=click.Choice(["float32", "float16", "int8"]),
    default=None,
    help="How the SQLite knn index stores its vectors: float16 or int8 take 1/2 or 1/4 "
    "of the space, queries re-rank their candidates by exact distances [default: as "
    "it is].",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@fail_cleanly
def reindex_command(
    db: str,
    n_lists: int | None,
    lists_metric: str,
    blobs_only: bool | None,
    storage: str | None,
    quiet: bool,
) -> None:
    """(Re)build a gallery's indexes: the knn index of a SQLite database (find
    --strategy knn) and, with --lists N, IVF lists on any database (find --nprobe).

    index keeps them current by itself; use this for a database filled otherwise,
    to reclaim the space of deleted faces, or to retrain the lists. Interrupted,
    rerun the same command: it resumes.
    """
    from ..storage.database import open_database

    with open_database(db, create=False) as database:
        on_sqlite = database.dialect.has_extension
    if storage is not None and not on_sqlite:
        raise click.UsageError("--storage is an option of the SQLite knn index")
    if blobs_only is not None:
        from ..lists import set_embedding_rows

        changed = set_embedding_rows(db, keep=not blobs_only, progress=not quiet)
        layout = "blobs only" if blobs_only else "blobs and face_embeddings rows"
        echo(f"layout: {layout} ({changed} faces changed)")
    if n_lists:
        _reindex_lists(db, n_lists, lists_metric, quiet)
    elif n_lists == 0:
        from ..lists import drop_lists

        echo("IVF lists: removed" if drop_lists(db) else "IVF lists: none")
    if on_sqlite:
        # SQLite's own knn index, with its own IVF lists (trained in C) when asked.
        from ..knn import reindex

        faces = reindex(db, progress=not quiet, lists=n_lists, storage=storage)
        echo(f"knn index: {faces} faces" + (f", stored as {storage}" if storage else ""))
    elif n_lists is None and blobs_only is None:
        _print_list_status(db)


def _reindex_lists(db: str, n_lists: int, metric: str, quiet: bool) -> None:
    from ..lists import train_lists

    report = train_lists(db, n_lists, metric=metric, progress=not quiet)
    sizes = report["sizes"]
    echo(
        f"IVF lists: {report['lists']} lists over {report['faces']} faces"
        f" (sizes {min(sizes)} to {max(sizes)})" + (", resumed" if report["resumed"] else "")
    )


def _print_list_status(db: str) -> None:
    from ..lists import list_status

    status = list_status(db)
    if status is None:
        echo("no IVF lists: train them with reindex --lists N (about sqrt(faces))")
        return
    for key, value in status.items():
        echo(f"{key}: {value}")


@cli.command(name="extension-path")
def extension_path_command() -> None:
    """Print the path of the SQLite extension, for .load in the sqlite3 shell."""
    from ..bindings.extension import loadable_path

    echo(loadable_path())


alias(cli, extension_path_command, "loadable-path")  # facevec.loadable_path
