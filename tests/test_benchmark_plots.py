"""benchmarks/plot_figures.py draws the README's figures: the numbers its tables hold."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plot_figures():
    path = ROOT / "benchmarks" / "plot_figures.py"
    spec = importlib.util.spec_from_file_location("plot_figures", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


README_PART = """## `bench_x.py`: a scan

Median ms per query:
over two lines.

| method | N = 10,000 | N = 1M | ns per row |
|---|---:|---:|---:|
| facevec `top_k` | 2.33 ms | **1,357** | 9 |
| `top_k` / faiss | 0.5 | 0.5 | |

N = 100,000 (316 lists)

| method | setting | recall@10 | ms/query |
|---|---|---:|---:|
| facevec IVF | nprobe 4 | 0.9 | 0.3 |
| facevec IVF | nprobe 1 | 0.5 | 0.2 |
| facevec IVF, batch | nprobe 1 | | 0.1 |

| N | knn | +mmap |
|---:|---:|---:|
| 10,000 | 1.1 | 0.5 |
| 100,000 | 12 | 7 |
"""


def test_each_kind_of_table_becomes_its_plot(plot_figures):
    scaling, recall, columns = plot_figures.plots(README_PART)
    assert scaling.series == {"facevec top_k": [(1e4, 2.33), (1e6, 1357.0)]}  # no ratio row
    assert scaling.log_x and scaling.log_y
    assert scaling.title == "bench_x.py: a scan"  # a two-line paragraph is no caption
    assert recall.series == {"facevec IVF": [(0.2, 0.5), (0.3, 0.9)]}  # time order
    assert recall.title == "bench_x.py: a scan\nN = 100,000 (316 lists)"
    assert columns.series == {"knn": [(1e4, 1.1), (1e5, 12.0)], "knn +mmap": [(1e4, 0.5), (1e5, 7)]}
    assert len({scaling.name, recall.name, columns.name}) == 3


def test_the_readmes_figures_are_read_and_drawn(plot_figures):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install '.[docs]')")
    made = plot_figures.plots(plot_figures.README.read_text())
    assert any(plot.y_label == "recall@10" for plot in made)
    assert any(plot.x_label.startswith("faces in the gallery") for plot in made)
    drawn = plot_figures.svg(made[0]).decode()
    assert drawn.startswith("<?xml") and "<svg" in drawn
    assert next(iter(made[0].series)) in drawn  # the legend names the series
