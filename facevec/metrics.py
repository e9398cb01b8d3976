"""The distance metrics: one table that the kernels, SQL, search and models read.

To add a metric: a kernel in csrc/distance.c with its ``fv_metric`` code, a row
here, and (for find/verify) deepface's threshold for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UnknownMetricError


@dataclass(frozen=True)
class Metric:
    name: str
    code: int  # enum fv_metric in csrc/facevec.h (a test checks they agree)
    sql_function: str  # the scalar SQL function that computes it
    knn: bool  # facevec_knn ranks by it
    deepface: bool  # deepface has thresholds for it: find, verify, identify
    larger_is_closer: bool = False  # inner_product ranks by the largest value
    divides_by_length: bool = False  # undefined for a vector of length 0


TABLE: tuple[Metric, ...] = (
    Metric("euclidean", 1, "euclidean_distance", knn=True, deepface=True),
    Metric("euclidean_squared", 0, "euclidean_distance_squared", knn=True, deepface=False),
    Metric("cosine", 2, "cosine_distance", knn=True, deepface=True, divides_by_length=True),
    Metric(
        "euclidean_l2", 3, "euclidean_l2_distance", knn=True, deepface=True, divides_by_length=True
    ),
    Metric("inner_product", 4, "inner_product", knn=False, deepface=False, larger_is_closer=True),
)

BY_NAME: dict[str, Metric] = {metric.name: metric for metric in TABLE}

#: Every metric of the C kernels (facevec.distances, facevec.top_k).
KERNEL_METRICS: tuple[str, ...] = tuple(BY_NAME)
#: Metrics of facevec_knn.
KNN_METRICS: tuple[str, ...] = tuple(m.name for m in TABLE if m.knn)
#: Metrics of the face pipeline (find, verify): those deepface has thresholds for.
FACE_METRICS: tuple[str, ...] = tuple(m.name for m in TABLE if m.deepface)


def kernel_metric(name: object) -> Metric:
    """The metric named ``name`` among the kernels' metrics."""
    metric = BY_NAME.get(name) if isinstance(name, str) else None
    if metric is None:
        raise UnknownMetricError(
            f"unknown metric {name!r}; choose one of {', '.join(KERNEL_METRICS)}"
        )
    return metric


def face_metric(name: object) -> Metric:
    """The metric named ``name`` among the face pipeline's metrics."""
    metric = BY_NAME.get(name) if isinstance(name, str) else None
    if metric is None or not metric.deepface:
        raise UnknownMetricError(
            f"unknown distance metric {name!r}; choose one of: {', '.join(FACE_METRICS)}"
        )
    return metric
