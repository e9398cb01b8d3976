"""People clustering on Spark (local cores) against the same clustering in one process.

Synthetic Dlib-like galleries (``bench_people.synthetic_faces``: identities of ~6
faces, strangers and look-alikes) stored as one Parquet gallery; the same
faces clustered by ``facevec.people.clustering.cluster_vectors`` in this process
(its graph on two threads) and by ``facevec.spark.cluster_people`` in
``local[N]``. The two partitions of the faces are checked equal before anything
is printed. Wall seconds and CPU seconds of the whole process tree (driver, JVM,
Python workers) are both given: the machine is shared. Usage:

    python benchmarks/bench_spark_people.py                 # 20,000 and 100,000 faces
    python benchmarks/bench_spark_people.py --faces 50000 --cores 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from bench_people import synthetic_faces
from bench_spark import tree_cpu_seconds

import facevec
from facevec.people.clustering import cluster_vectors
from facevec.transfer import export_parquet


def groups(labels) -> set[frozenset[int]]:
    members = defaultdict(set)
    for row, label in enumerate(labels):
        if label is not None and label == label and label >= 0:
            members[int(label)].add(row)
    return {frozenset(rows) for rows in members.values()}


def one_process(vectors: np.ndarray, names: list[str]) -> tuple[float, float, set]:
    photos = np.unique(np.asarray(names, dtype=object), return_inverse=True)[1]
    wall, cpu = time.perf_counter(), tree_cpu_seconds()
    result = cluster_vectors(vectors, photos)
    return time.perf_counter() - wall, tree_cpu_seconds() - cpu, groups(result.cluster.tolist())


def on_spark(cores: int, gallery: Path, n: int) -> tuple[float, float, float, set]:
    from facevec.spark import cluster_people, read_gallery, spark_session

    started = time.perf_counter()
    spark = spark_session(
        f"local[{cores}]",
        "bench_spark_people",
        {"spark.driver.memory": "6g", "spark.sql.shuffle.partitions": str(4 * cores)},
        progress=False,
    )
    spark.sparkContext.setLogLevel("ERROR")
    spark.range(1).count()
    startup = time.perf_counter() - started
    wall, cpu = time.perf_counter(), tree_cpu_seconds()
    result = cluster_people(read_gallery(spark, [str(gallery)])).toPandas()
    seconds, used = time.perf_counter() - wall, tree_cpu_seconds() - cpu
    spark.stop()
    labels = [None] * n
    for face_id, cluster in zip(result["id"], result["cluster"], strict=True):
        labels[int(face_id) - 1] = cluster
    return startup, seconds, used, groups(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", default="20000,100000")
    parser.add_argument("--cores", default="2")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    print("| faces | method | wall s | CPU s | people | notes |")
    print("|---:|---|---:|---:|---:|---|")
    for n in [int(x) for x in args.faces.split(",")]:
        vectors, _ = synthetic_faces(n, args.seed)
        names = [f"photo{row:07d}.jpg" for row in range(n)]
        workdir = Path(tempfile.mkdtemp(prefix="bench_spark_people_"))
        facevec.add(workdir / "gallery.db", names, vectors)
        export_parquet(workdir / "gallery.db", workdir / "gallery", progress=False)
        wall, cpu, expected = one_process(vectors, names)
        print(f"| {n:,} | one process | {wall:.1f} | {cpu:.1f} | {len(expected):,} | |")
        for cores in [int(c) for c in args.cores.split(",")]:
            startup, wall, cpu, mine = on_spark(cores, workdir / "gallery", n)
            assert mine == expected, "Spark's clustering differs from the one-process clustering"
            print(
                f"| {n:,} | spark local[{cores}] | {wall:.1f} | {cpu:.1f} | {len(mine):,} "
                f"| same clusters; session start {startup:.0f} s apart |"
            )


if __name__ == "__main__":
    main()
