"""The Spark commands: facevec spark find (batch search) and facevec spark people
(people clustering), past one machine."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from ..parameters import check_threshold
from .main import NUMBER_THRESHOLD, FiniteFloatRange, alias, cli, fail_cleanly, metric_option
from .output import echo


@cli.group(name="spark")
def spark_group() -> None:
    """Batch search on Apache Spark (pip install 'facevec[spark]').

    The gallery's shards (SQLite files, database URLs, Parquet folders) are read
    in partitions on the executors; the queries (or a small gallery) are
    broadcast to them.
    """


def gallery_option(command: Callable) -> Callable:
    """--gallery, repeated: the shards of one gallery."""
    return click.option(
        "--gallery",
        "sources",
        multiple=True,
        required=True,
        help="A gallery shard: SQLite file, postgresql:// or mysql:// URL, or Parquet folder. "
        "Repeat for each shard.",
    )(command)


def session_options(command: Callable) -> Callable:
    """--master, --conf and --rows-per-partition: where and how Spark runs."""
    for option in reversed(
        (
            click.option(
                "--master",
                default="local[2]",
                show_default=True,
                help="Spark master URL: local[N], spark://host:7077, yarn, k8s://...",
            ),
            click.option(
                "--conf",
                "settings",
                multiple=True,
                metavar="KEY=VALUE",
                help="A Spark setting (e.g. spark.executor.memory=8g); repeatable.",
            ),
            click.option(
                "--rows-per-partition",
                type=click.IntRange(1),
                default=250_000,
                show_default=True,
                help="Faces per partition of a database shard.",
            ),
        )
    ):
        command = option(command)
    return command


def _spark_errors() -> tuple[type[BaseException], ...]:
    try:
        from pyspark.errors import PySparkException
    except ImportError:
        return ()
    return (PySparkException,)


def _is_parquet(path: str) -> bool:
    if os.path.isfile(path):
        return path.endswith(".parquet")
    return os.path.isdir(path) and any(
        name.endswith(".parquet") for _, _, files in os.walk(path) for name in files
    )


@spark_group.command(name="find")
@click.argument("queries", type=click.Path(exists=True))
@gallery_option
@click.option("--k", "k", type=click.IntRange(1), default=None, help="At most K hits per query.")
@click.option(
    "--threshold",
    type=NUMBER_THRESHOLD,
    default=None,
    help="Distance threshold (default: deepface's for the model and metric).",
)
@metric_option()
@click.option("--similarity-search", is_flag=True, help="No threshold: the K nearest (needs --k).")
@click.option(
    "--out",
    required=True,
    type=click.Path(),
    help="Parquet folder for the results (one row per hit).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace --out if it exists (an unfinished run of the same search in --out is "
    "resumed without it).",
)
@session_options
@click.option(
    "--broadcast",
    type=click.Choice(("auto", "queries", "gallery")),
    default="auto",
    show_default=True,
    help="Side copied to every executor: the queries (a large gallery), or the gallery "
    "(a watch list: up to 256 MiB of vectors by default).",
)
@click.option(
    "--query-block-size",
    type=click.IntRange(1),
    default=65_536,
    show_default=True,
    help="Queries the driver fetches and broadcasts at once; more are searched block by "
    "block, so the driver never holds more. Each block's hits are committed to --out "
    "as it ends: an interrupted run resumes from the last block committed.",
)
@click.option(
    "--detector",
    "detector_backend",
    default=None,
    help="Face detector for photo queries (default: the gallery's).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@fail_cleanly
def spark_find_command(
    queries: str,
    sources: tuple[str, ...],
    k: int | None,
    threshold: float | None,
    distance_metric: str,
    similarity_search: bool,
    out: str,
    overwrite: bool,
    master: str,
    settings: tuple[str, ...],
    rows_per_partition: int,
    broadcast: str,
    query_block_size: int,
    detector_backend: str | None,
    quiet: bool,
) -> None:
    """Find the faces of QUERIES in the gallery's shards, on Spark.

    QUERIES is a Parquet file or folder of vectors (an 'embedding' column, and
    'query_id' or 'id') or a folder of photos, embedded on the executors.
    Results go to --out as Parquet: the query, rank, shard, face and distance,
    as facevec find gives them, committed a block of queries at a time. Run
    again, the same command resumes an interrupted search where it stopped.
    """
    from ..spark import queries_from_parquet, queries_from_photos, read_gallery
    from ..spark.block_output import check_output
    from ..spark.resumable_search import search_to_parquet
    from ..spark.session import spark_session

    check_threshold(threshold)
    config = _settings(settings)
    check_output(out, overwrite)
    try:
        # facevec's bar of blocks and queries replaces Spark's of stages, which
        # would draw over it on the same line.
        session = spark_session(master, "facevec spark find", config, progress=False)
        session.sparkContext.setLogLevel("ERROR")
        gallery = read_gallery(session, list(sources), rows_per_partition=rows_per_partition)
        if _is_parquet(queries):
            query_frame = queries_from_parquet(session, queries)
        else:
            query_frame = queries_from_photos(
                session,
                queries,
                gallery.model_name,
                detector_backend or gallery.detector_backend or "dlib",
            )
        run = search_to_parquet(
            gallery,
            query_frame,
            out,
            k=k,
            distance_metric=distance_metric,
            threshold=threshold,
            similarity_search=similarity_search,
            broadcast=broadcast,
            query_block_size=query_block_size,
            overwrite=overwrite,
            progress=not quiet,
            query_source=os.path.abspath(queries),
        )
        summary = _summary(out)
    except _spark_errors() as err:
        raise click.ClickException(
            f"Spark: {_first_line(err)} (the blocks done are kept in {out}: run the same "
            "command to resume)"
            if os.path.isdir(out)
            else f"Spark: {_first_line(err)}"
        ) from err
    except KeyboardInterrupt:
        echo(
            f"interrupted; the blocks done are kept in {out}: run the same command to resume",
            err=True,
        )
        raise SystemExit(130) from None
    if run["resumed"]:
        echo(f"resumed: {run['resumed']} of {run['blocks']} blocks were done before")
    echo(
        f"{summary['hits']} hits for {summary['queries']} queries among "
        f"{gallery.faces} faces in {len(sources)} shards, written to {out}"
    )


def _settings(settings: tuple[str, ...]) -> dict[str, str]:
    from ..errors import InvalidParameterError

    config = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise InvalidParameterError(f"--conf takes KEY=VALUE, not {setting!r}")
        config[key.strip()] = value.strip()
    return config


def _check_out(out: str, overwrite: bool) -> None:
    if os.path.exists(out) and not overwrite:
        raise click.ClickException(f"{out} exists; choose another --out or add --overwrite")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _summary(out: str) -> dict[str, Any]:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = ds.dataset(out, format="parquet").to_table(columns=["query_id"])
    return {"hits": table.num_rows, "queries": len(pc.unique(table.column("query_id")))}


@spark_group.command(name="people")
@gallery_option
@metric_option()
@click.option(
    "--threshold",
    type=FiniteFloatRange(0, min_open=True),
    default=None,
    help="Linkage threshold: RMS distance between two groups' faces below which they are "
    "one person (default: 0.92 x deepface's threshold).",
)
@click.option(
    "--min-faces",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="Faces a group needs to become a person.",
)
@click.option(
    "--neighbours",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Neighbours of each face in the graph.",
)
@click.option("--out", type=click.Path(), help="Parquet folder for the result.")
@click.option(
    "--write",
    is_flag=True,
    help="Write the suggestions back to the gallery (one database), as 'people cluster' "
    "does: undo with 'facevec people undo'.",
)
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@session_options
@click.option("--quiet", is_flag=True, help="No Spark progress bar.")
@fail_cleanly
def spark_people_command(
    sources: tuple[str, ...],
    distance_metric: str,
    threshold: float | None,
    min_faces: int,
    neighbours: int,
    out: str | None,
    write: bool,
    overwrite: bool,
    master: str,
    settings: tuple[str, ...],
    rows_per_partition: int,
    quiet: bool,
) -> None:
    """Cluster the faces without a person into people, on Spark.

    The same clustering as 'facevec people cluster' on the merged gallery: the
    people the database shards hold (named, confirmed, suggested) are read and
    kept, faces join them or form new people, rejections and dismissed faces
    are respected. --write stores the suggestions in the gallery (one database;
    'facevec people undo' takes them back). --out gets one row per face: shard,
    source, id, img_name, identity, person (the person it has or joins), cluster
    (the key shard << 40 | id of a new group's first face), score, assigned.
    """
    from ..people import defaults
    from ..spark import cluster_people, read_gallery
    from ..spark.people_write import writable_source, write_people
    from ..spark.session import spark_session

    if out is None and not write:
        raise click.UsageError("give --out (a Parquet folder), --write (the gallery), or both")
    config = _settings(settings)
    if out is not None:
        _check_out(out, overwrite)
    try:
        session = spark_session(master, "facevec spark people", config, progress=not quiet)
        session.sparkContext.setLogLevel("ERROR")
        gallery = read_gallery(session, list(sources), rows_per_partition=rows_per_partition)
        if write:
            writable_source(gallery)  # refused before the work, not after
        faces = cluster_people(
            gallery,
            distance_metric=distance_metric,
            threshold=threshold,
            min_faces=min_faces,
            neighbours=neighbours,
        ).persist()
        if out is not None:
            faces.write.mode("overwrite" if overwrite else "errorifexists").parquet(out)
            summary = _people_summary(out)
            echo(
                f"{summary['people']} people ({summary['clustered']} faces) among "
                f"{summary['faces']} faces in {len(sources)} shards, written to {out}"
            )
        if write:
            linkage = (
                defaults.linkage_threshold(gallery.model_name, distance_metric)
                if threshold is None
                else defaults.to_euclidean(threshold, distance_metric)
            )
            report = write_people(gallery, faces, min_faces, linkage, distance_metric)
            echo(
                f"clustered {report.unassigned} faces: {report.joined_existing} joined "
                f"existing people, {report.new_people} new people "
                f"({report.faces_in_new_people} faces), {report.left_unassigned} left "
                "unassigned"
            )
            if report.edit_id is not None:
                echo(f"(to undo: facevec people undo --db {gallery.sources[0].name})")
    except _spark_errors() as err:
        raise click.ClickException(f"Spark: {_first_line(err)}") from err


def _people_summary(out: str) -> dict[str, int]:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    column = ds.dataset(out, format="parquet").to_table(columns=["cluster"]).column("cluster")
    clustered = column.drop_null()
    return {
        "faces": len(column),
        "clustered": len(clustered),
        "people": len(pc.unique(clustered)),
    }


alias(spark_group, spark_find_command, "batch-search")  # facevec.spark.batch_search
alias(spark_group, spark_find_command, "search-to-parquet")  # facevec.spark.search_to_parquet
alias(spark_group, spark_people_command, "cluster-people")  # facevec.spark.cluster_people
