"""Default thresholds of the people features, per model and metric.

Each is a share of deepface's verification threshold for the model and metric
(``engine.models.find_threshold``), tuned on Dlib (the offline default): on the
shared test photos and on synthetic Dlib-like galleries (benchmarks/bench_people.py).

Clustering works in a euclidean space: the vectors themselves for ``euclidean``,
the vectors scaled to length 1 for ``euclidean_l2`` and ``cosine``; a cosine
threshold t is the euclidean_l2 distance sqrt(2 t) between unit vectors.

| setting | share | Dlib, euclidean | Dlib, euclidean_l2 | Dlib, cosine (as l2) |
|---|---:|---:|---:|---:|
| clustering linkage (RMS distance between two clusters' faces) | 0.92 | 0.552 | 0.368 | 0.344 |
| graph edges considered (distance between two faces) | 1.2 x linkage | 0.662 | 0.442 | 0.413 |
| identify: a person's score (mean of its k nearest faces) matches at | 1.0 | 0.6 | 0.4 | 0.07 |
| identify: ambiguous when the second person is within this margin | 0.1 | 0.06 | 0.04 | 0.007 |
"""

from __future__ import annotations

import math

from ..engine.models import find_threshold
from ..errors import InvalidParameterError
from ..metrics import face_metric

LINKAGE_SHARE = 0.92
GRAPH_SHARE = 1.2  # of the linkage threshold
MARGIN_SHARE = 0.1
NEIGHBOURS = 10  # k of the clustering graph
MIN_FACES = 2  # a new suggested person has at least this many faces
IDENTIFY_K = 3  # a person is scored on its k nearest faces


def normalises(metric: str) -> bool:
    """Whether clustering works on unit vectors for this metric."""
    return face_metric(metric).name != "euclidean"


def to_euclidean(threshold: float, metric: str) -> float:
    """A threshold of `metric` as a euclidean distance in clustering's space."""
    if face_metric(metric).name == "cosine":
        return math.sqrt(2.0 * max(threshold, 0.0))
    return float(threshold)


def linkage_threshold(model_name: str, metric: str) -> float:
    return LINKAGE_SHARE * to_euclidean(find_threshold(model_name, metric), metric)


def identify_threshold(model_name: str, metric: str) -> float:
    return find_threshold(model_name, metric)


def identify_margin(threshold: float) -> float:
    return MARGIN_SHARE * threshold


def check_positive(name: str, value: float) -> float:
    if value is None or not (value > 0) or math.isinf(value):
        raise InvalidParameterError(f"{name} must be a positive number, not {value!r}")
    return float(value)
