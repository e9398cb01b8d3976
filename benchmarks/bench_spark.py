"""Batch search on Spark (local cores) against one process and against faiss.

Side by side, over the same random 128-d float32 vectors at Dlib's scale, exact
top-k of every query (no threshold):

- spark local[N]: ``facevec.spark.batch_search`` over a Parquet gallery (shards
  as ``facevec export`` writes them), results written to Spark's no-op sink;
  session start-up is timed apart;
- one process: the same per-partition code (``top_k_many``) over the whole
  matrix in memory, one thread;
- faiss ``IndexFlatL2``, one thread, the whole query batch at once (BLAS).

The references answer the first ``--reference-queries`` queries (the rate per
pair does not depend on the count past a few hundred). Each method is timed in
wall seconds and in CPU seconds of its whole process tree (driver, JVM, Python
workers, read from /proc): on a shared machine the CPU seconds are the work done,
whatever share of the cores the run got. Also measured: Spark's fixed cost per
task (an empty Arrow task). Spark's answers are checked against the one-process
answers (same ids) before anything is printed. Usage:

    python benchmarks/bench_spark.py                                # 10k x 1M, local[1], local[2]
    python benchmarks/bench_spark.py --gallery 10000000 --queries 1000 --skip-faiss
    python benchmarks/bench_spark.py --gallery 10000 --cores 2 --driver-memory 100000,1000000
    python benchmarks/bench_spark.py --gallery 10000 --cores 2 --driver-memory 1000000 \
        --output resumable          # spark find's block-by-block commits; or parquet

The queries are written to Parquet and read by the executors; the driver fetches
them one block (``--query-block``) at a time. ``--driver-memory`` measures what
that bounds: the driver's peak memory for each number of queries, each in a fresh
process (hits written to Spark's no-op sink).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from facevec.transfer import PARQUET_METADATA_KEY  # noqa: E402
from facevec.vector_columns import float_list_column  # noqa: E402

DIM = 128
CHUNK = 250_000


def gallery_chunk(start: int, rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, start])
    return rng.normal(scale=0.09, size=(rows, DIM)).astype(np.float32)


def write_gallery(folder: Path, n: int, seed: int, rows_per_file: int) -> None:
    """Parquet shards in facevec's export layout (id, img_name, face_index, embedding)."""
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {PARQUET_METADATA_KEY: json.dumps({"model_name": "Dlib", "dimensions": DIM})}
    file_number = 0
    for chunk_start in range(0, n, CHUNK):  # the chunks load_gallery makes, cut into files
        chunk = gallery_chunk(chunk_start, min(CHUNK, n - chunk_start), seed)
        for offset in range(0, chunk.shape[0], rows_per_file):
            vectors = chunk[offset : offset + rows_per_file]
            first = chunk_start + offset
            ids = np.arange(first, first + vectors.shape[0], dtype=np.int64)
            table = pa.table(
                {
                    "id": ids,
                    "img_name": pa.array([f"face{i}.jpg" for i in ids]),
                    "face_index": pa.array(np.zeros(ids.size, dtype=np.int32)),
                    "embedding": float_list_column(vectors),
                }
            ).replace_schema_metadata(metadata)
            pq.write_table(table, folder / f"part-{file_number:05d}.parquet")
            file_number += 1


def load_gallery(n: int, seed: int) -> np.ndarray:
    return np.concatenate(
        [gallery_chunk(start, min(CHUNK, n - start), seed) for start in range(0, n, CHUNK)]
    )


def make_queries(matrix: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    picked = matrix[rng.integers(0, matrix.shape[0], count)]
    return (picked + rng.normal(scale=0.02, size=picked.shape)).astype(np.float32)


def tree_cpu_seconds(root: int | None = None) -> float:
    """CPU seconds (user + system) of a process and all its descendants, from /proc:
    the driver, Spark's JVM and its Python workers. On a shared machine this is the
    work done, whatever share of the cores the run was given."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")


def timed(function, *args):  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def one_process(queries: np.ndarray, matrix: np.ndarray, k: int) -> np.ndarray:
    from facevec.spark.partition_search import top_k_many

    _, row, _ = top_k_many(queries, matrix, k, "euclidean", None)
    return row.reshape(queries.shape[0], k)


def with_faiss(queries: np.ndarray, matrix: np.ndarray, k: int) -> np.ndarray:
    import faiss

    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatL2(DIM)
    index.add(matrix)
    return index.search(queries, k)[1]


def write_queries(path: Path, queries: np.ndarray) -> None:
    """The queries as Parquet (query_id, embedding), read by the executors."""
    table = pa.table(
        {
            "query_id": np.arange(queries.shape[0], dtype=np.int64),
            "embedding": float_list_column(queries, fixed=False),
        }
    )
    pq.write_table(table, path, row_group_size=65_536)


def write_many_queries(path: Path, count: int, seed: int) -> None:
    """`count` face-like queries as Parquet, written 250,000 at a time."""
    path.mkdir(parents=True, exist_ok=True)
    for part, start in enumerate(range(0, count, CHUNK)):
        rows = min(CHUNK, count - start)
        queries = gallery_chunk(start, rows, seed + 7)
        table = pa.table(
            {
                "query_id": np.arange(start, start + rows, dtype=np.int64),
                "embedding": float_list_column(queries, fixed=False),
            }
        )
        pq.write_table(table, path / f"part-{part:05d}.parquet", row_group_size=65_536)


def peak_kib(pid: int) -> int:
    """A process's peak resident memory (VmHWM), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def jvm_pids() -> list[int]:
    """This process's Java children: the driver JVM (in local mode also the executor)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[1]) == os.getpid() and "java" in text[: text.rindex(")")]:
            found.append(int(entry))
    return found


def driver_run(
    cores: int, gallery: Path, queries: Path, k: int, block: int, output: str = "noop"
) -> dict:
    """One batch search with the queries read from Parquet by the executors and the
    hits written to Spark's no-op sink (`output` "noop"), to Parquet in one write
    ("parquet"), or committed block by block as spark find does ("resumable"): what
    the driver's memory peaks at, and what each costs."""
    import shutil

    from facevec.spark import (
        batch_search,
        queries_from_parquet,
        read_gallery,
        search_to_parquet,
        spark_session,
    )

    spark = spark_session(
        f"local[{cores}]",
        "bench_spark_driver",
        {"spark.driver.memory": "6g", "spark.sql.shuffle.partitions": str(4 * cores)},
        progress=False,
    )
    spark.sparkContext.setLogLevel("ERROR")
    spark.range(1).count()
    before = peak_kib(os.getpid())
    out = gallery.parent / f"hits_{output}"
    shutil.rmtree(out, ignore_errors=True)
    started, cpu = time.perf_counter(), tree_cpu_seconds()
    options = {"k": k, "similarity_search": True, "broadcast": "queries", "query_block_size": block}
    search_gallery = read_gallery(spark, [str(gallery)])
    query_frame = queries_from_parquet(spark, queries)
    if output == "resumable":
        search_to_parquet(search_gallery, query_frame, out, progress=False, **options)
    else:
        hits = batch_search(search_gallery, query_frame, **options)
        if output == "parquet":
            hits.write.parquet(str(out))
        else:
            hits.write.format("noop").mode("overwrite").save()
    result = {
        "seconds": time.perf_counter() - started,
        "cpu": tree_cpu_seconds() - cpu,
        "python driver peak MiB (after start-up)": before / 1024,
        "python driver peak MiB": peak_kib(os.getpid()) / 1024,
        "JVM peak MiB": sum(peak_kib(pid) for pid in jvm_pids()) / 1024,
        "load": os.getloadavg()[0],
    }
    spark.stop()
    return result


def spark_run(
    cores: int, gallery: Path, queries: np.ndarray, k: int, block: int
) -> dict[str, float]:
    from facevec.spark import batch_search, queries_from_parquet, read_gallery, spark_session

    started = time.perf_counter()
    spark = spark_session(
        f"local[{cores}]",
        "bench_spark",
        {"spark.driver.memory": "6g", "spark.sql.shuffle.partitions": str(4 * cores)},
        progress=False,
    )
    spark.sparkContext.setLogLevel("ERROR")
    spark.range(1).count()  # the JVM and a first Python worker are up
    startup = time.perf_counter() - started

    # Spark's fixed cost per task: Arrow tasks that do nothing.
    tasks = 200
    started = time.perf_counter()
    spark.range(0, tasks, numPartitions=tasks).mapInArrow(
        lambda batches: batches, "id long"
    ).write.format("noop").mode("overwrite").save()
    per_task = (time.perf_counter() - started) / tasks * cores

    query_path = gallery.parent / f"queries_{gallery.name}_{queries.shape[0]}.parquet"
    write_queries(query_path, queries)
    started, cpu = time.perf_counter(), tree_cpu_seconds()
    frame = read_gallery(spark, [str(gallery)])
    hits = batch_search(
        frame,
        queries_from_parquet(spark, query_path),
        k=k,
        similarity_search=True,
        broadcast="queries",
        query_block_size=block,
    )
    result = hits.select("query_id", "rank", "face_id").orderBy("query_id", "rank").toArrow()
    seconds = time.perf_counter() - started
    cpu = tree_cpu_seconds() - cpu
    partitions = sum(part.rdd.getNumPartitions() for part in frame.parts)
    rows = result.column("face_id").to_numpy().reshape(queries.shape[0], k)
    driver_peak = peak_kib(os.getpid()) / 1024
    spark.stop()
    return {
        "seconds": seconds,
        "cpu": cpu,
        "load": os.getloadavg()[0],
        "python driver peak MiB": driver_peak,
        "startup": startup,
        "per_task": per_task,
        "partitions": partitions,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gallery", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--cores", default="1,2", help="local[N] runs, e.g. 1,2")
    parser.add_argument("--rows-per-file", type=int, default=125_000)
    parser.add_argument("--query-block", type=int, default=65_536)
    parser.add_argument("--reference-queries", type=int, default=2_000)
    parser.add_argument("--skip-faiss", action="store_true")
    parser.add_argument("--skip-one-process", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--driver-memory",
        default=None,
        metavar="N,N,...",
        help="Instead: the driver's peak memory for each number of queries (read from "
        "Parquet, one fresh process each) against --gallery faces, e.g. 100000,1000000",
    )
    parser.add_argument(
        "--output",
        choices=("noop", "parquet", "resumable"),
        default="noop",
        help="With --driver-memory: the hits to Spark's no-op sink, to Parquet in one "
        "write, or committed block by block (spark find's resumable write)",
    )
    parser.add_argument("--driver-run", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if args.driver_run:  # a child of --driver-memory: one run, its figures as JSON
        gallery_path, query_path = args.driver_run.split(",")
        cores = int(args.cores.split(",")[-1])
        run = driver_run(
            cores, Path(gallery_path), Path(query_path), args.k, args.query_block, args.output
        )
        print(json.dumps(run))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_spark_"))
    gallery = workdir / f"gallery_{args.gallery}"
    if not gallery.exists():
        started = time.perf_counter()
        write_gallery(gallery, args.gallery, args.seed, args.rows_per_file)
        print(f"wrote {args.gallery:,} faces in {time.perf_counter() - started:.0f} s to {gallery}")
    if args.driver_memory:
        driver_memory(args, workdir, gallery)
        return
    if args.skip_one_process and args.skip_faiss:  # no reference: spare the memory
        matrix = gallery_chunk(0, min(CHUNK, args.gallery), args.seed)
    else:
        matrix = load_gallery(args.gallery, args.seed)
    queries = make_queries(matrix, args.queries, args.seed)
    pairs = args.gallery * args.queries
    results: dict[str, dict] = {}

    # The references answer the first --reference-queries queries; rates are per pair.
    subset = queries[: args.reference_queries]
    reference_pairs = args.gallery * subset.shape[0]
    reference = None
    if not args.skip_one_process:
        wall, cpu, reference = timed(one_process, subset, matrix, args.k)
        results["one process (top_k_batch, 1 thread)"] = {
            "seconds": wall,
            "cpu": cpu,
            "pairs": reference_pairs,
        }
    if not args.skip_faiss:
        wall, cpu, rows = timed(with_faiss, subset, matrix, args.k)
        row = {"seconds": wall, "cpu": cpu, "pairs": reference_pairs}
        if reference is not None:
            row["same ids"] = round(float(np.mean(rows == reference)), 5)
        results["faiss IndexFlatL2 (1 thread)"] = row
    del matrix
    for cores in [int(c) for c in args.cores.split(",")]:
        run = spark_run(cores, gallery, queries, args.k, args.query_block)
        if reference is not None:
            same = np.array_equal(run["rows"][: subset.shape[0]], reference)
            assert same, "Spark's answer differs from the one-process answer"
        row = {key: value for key, value in run.items() if key != "rows"}
        results[f"spark local[{cores}]"] = {**row, "pairs": pairs}

    base = results.get("one process (top_k_batch, 1 thread)")
    print(
        f"\n{args.queries:,} queries x {args.gallery:,} faces, k={args.k}, {DIM}-d "
        f"({pairs:,} pairs; references on {subset.shape[0]:,} queries)\n"
    )
    print("| method | pairs | wall s | CPU s | M pairs / CPU s | M pairs / wall s | notes |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, row in results.items():
        rate_cpu = row["pairs"] / row["cpu"] / 1e6
        rate_wall = row["pairs"] / row["seconds"] / 1e6
        notes = [
            f"{key} {value:.2f}" if isinstance(value, float) else f"{key} {value}"
            for key, value in row.items()
            if key not in ("seconds", "cpu", "pairs")
        ]
        if base:
            speed = (base["cpu"] / base["pairs"]) / (row["cpu"] / row["pairs"])
            notes.append(f"CPU per pair vs one process {speed:.2f}x")
        notes = ", ".join(notes)
        print(
            f"| {name} | {row['pairs']:.2g} | {row['seconds']:.1f} | {row['cpu']:.1f} "
            f"| {rate_cpu:.1f} | {rate_wall:.1f} | {notes} |"
        )
    print(json.dumps({name: {k: v for k, v in row.items()} for name, row in results.items()}))


def driver_memory(args: argparse.Namespace, workdir: Path, gallery: Path) -> None:
    """The driver's peak memory as the number of queries grows, a fresh process each."""
    import subprocess

    print(
        "| queries | gallery | wall s | CPU s | Python driver peak MiB | JVM peak MiB "
        "(driver + local executor) | load |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for count in [int(n) for n in args.driver_memory.split(",")]:
        queries = workdir / f"queries_{count}"
        if not queries.exists():
            write_many_queries(queries, count, args.seed)
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--driver-run",
                f"{gallery},{queries}",
                "--cores",
                args.cores,
                "--k",
                str(args.k),
                "--query-block",
                str(args.query_block),
                "--output",
                args.output,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        run = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"| {count:,} | {args.gallery:,} | {run['seconds']:.1f} | {run['cpu']:.1f} "
            f"| {run['python driver peak MiB']:.0f} | {run['JVM peak MiB']:.0f} "
            f"| {run['load']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
