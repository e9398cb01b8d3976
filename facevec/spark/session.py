"""A SparkSession for facevec's jobs, and the one place pyspark is imported from.

pyspark is imported only when a Spark function runs, so ``facevec --help`` and
every other command stay fast without it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ..errors import MissingDependencyError

#: Settings facevec's jobs rely on; a session of your own may set them too.
RECOMMENDED_CONFIG = {
    # Arrow batches between the JVM and the Python workers: large enough that the
    # C kernels, not the per-batch overhead, set the pace.
    "spark.sql.execution.arrow.maxRecordsPerBatch": "20000",
    # The Python workers are reused by later tasks: the kernels are loaded once.
    "spark.python.worker.reuse": "true",
}


def require_pyspark() -> Any:
    """The pyspark module, or MissingDependencyError naming the extra."""
    try:
        import pyspark
    except ImportError:
        raise MissingDependencyError(
            "facevec's Spark jobs need pyspark and pyarrow: pip install 'facevec[spark]'"
        ) from None
    return pyspark


def spark_session(
    master: str | None = "local[2]",
    app_name: str = "facevec",
    config: dict[str, str] | None = None,
    progress: bool = True,
) -> Any:
    """A SparkSession (the active one if there is one, with `config` applied).

    `master`: ``local[N]`` (N cores of this machine), or a cluster's URL
    (``spark://host:7077``, ``yarn``, ``k8s://...``); None leaves it to
    spark-submit. Executors run this Python (PYSPARK_PYTHON), so they import the
    same facevec and its C kernels; on a cluster, install facevec on every node.
    `progress`: Spark's console progress bar of stages and tasks.
    """
    require_pyspark()
    from pyspark.sql import SparkSession

    # Executors must run a Python that has facevec: this one, unless set otherwise.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    settings = {
        **RECOMMENDED_CONFIG,
        "spark.ui.showConsoleProgress": "true" if progress else "false",
        **(config or {}),
    }
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    for key, value in settings.items():  # getOrCreate may return a running session
        if not key.startswith("spark.ui.") and not _static(key):
            session.conf.set(key, value)
    return session


def _static(key: str) -> bool:
    # Settings fixed when the context starts; a running session keeps its own.
    return key.startswith(("spark.python.", "spark.driver.", "spark.executor.", "spark.master"))
