"""Plots of the figures in benchmarks/README.md.

The README's tables are the record: each benchmark prints its figures, and they are
written there with the method and the machine. This draws those same numbers:

- a table whose columns are `N = <size>` (one row per method), or whose first column
  is `N` (one column per method): time against gallery size, both axes logarithmic;
- a table with `recall@10` and `ms/query` columns: recall against time per query,
  one line per method (per `faces` and `method` where the table has both).

Rows that are ratios of two methods (`a / b`) are not drawn.

    python benchmarks/plot_figures.py build/plots     # one SVG per plot, listed

The documentation site draws them when it is built (docs/hooks/benchmark_plots.py).
Needs matplotlib (pip install -e '.[docs]').
"""

from __future__ import annotations

import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"
SIZE = re.compile(r"^N\s*=\s*([\d,.]+)\s*([kM]?)$")


@dataclass
class Table:
    section: str  # the heading above the table
    caption: str  # the line of text just above it
    header: list[str]
    rows: list[list[str]]


@dataclass
class Plot:
    name: str
    title: str
    x_label: str
    y_label: str
    log_x: bool
    log_y: bool
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def tables(text: str) -> list[Table]:
    """Every table, with its section and its caption: a one-line paragraph right above it."""
    found: list[Table] = []
    section, paragraph, caption, block = "", [], "", []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if len(block) > 2:
            found.append(Table(section, caption, _cells(block[0]), [_cells(b) for b in block[2:]]))
        block = []
        if line.startswith("#"):
            section, paragraph, caption = line.lstrip("#").strip(), [], ""
        elif line.strip():
            paragraph.append(line.strip())
        elif paragraph:
            caption = paragraph[0] if len(paragraph) == 1 else ""
            paragraph = []
    return found


def number(cell: str) -> float | None:
    """A figure as the table writes it: `1,134`, `**5.77**`, `0.264 ms`, `7.8×`."""
    text = cell.replace("*", "").replace(",", "").replace("×", "").strip()
    text = re.sub(r"\s*ms$", "", text)
    try:
        return float(text)
    except ValueError:
        return None


def size(cell: str) -> float | None:
    """`N = 10,000`, `100,000`, `100k` or `1M` as a number of faces."""
    match = SIZE.match(cell.replace("*", "").strip())
    text, unit = match.groups() if match else (cell.strip(), "")
    if not match:
        unit = text[-1:] if text[-1:] in ("k", "M") else ""
        text = text[: len(text) - len(unit)]
    value = number(text)
    return None if value is None else value * {"": 1, "k": 1e3, "M": 1e6}[unit]


def _label(text: str) -> str:
    return text.replace("`", "").replace("*", "")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", _label(text).lower()).strip("-")


def _is_ratio(name: str) -> bool:
    return " / " in name


def _scaling(table: Table, name: str) -> Plot | None:
    plot = Plot(name, "", "faces in the gallery (N)", "ms per query", True, True)
    head = table.header
    if head[0].lower() == "method" and any(SIZE.match(cell) for cell in head[1:]):
        columns = [(i, size(cell)) for i, cell in enumerate(head) if SIZE.match(cell)]
        for row in table.rows:
            if _is_ratio(row[0]):
                continue
            points = [(n, number(row[i])) for i, n in columns if i < len(row)]
            plot.series[_label(row[0])] = [(n, v) for n, v in points if n and v]
    elif head[0] == "N":
        names, previous = [], ""
        for cell in head[1:]:  # "+mmap" is the column before it, with mmap
            previous = f"{previous} {cell}" if cell.startswith("+") else cell
            names.append(_label(previous))
        for row in table.rows:
            n = size(row[0])
            for name_, cell in zip(names, row[1:], strict=False):
                value = number(cell)
                if n and value:
                    plot.series.setdefault(name_, []).append((n, value))
    else:
        return None
    plot.series = {k: v for k, v in plot.series.items() if len(v) >= 2}
    return plot if plot.series else None


def _recall(table: Table, name: str) -> Plot | None:
    head = [cell.lower() for cell in table.header]
    if "recall@10" not in head or "ms/query" not in head:
        return None
    recall, time = head.index("recall@10"), head.index("ms/query")
    keys = [i for i, cell in enumerate(head) if cell in ("faces", "method", "index")]
    if not keys:
        return None
    plot = Plot(name, "", "ms per query", "recall@10", True, False)
    for row in table.rows:
        label = _label(" ".join(row[i] for i in keys))
        r, t = number(row[recall]), number(row[time])
        if r is not None and t and not _is_ratio(label):
            plot.series.setdefault(label, []).append((t, r))
    for points in plot.series.values():
        points.sort()
    return plot if plot.series else None


def plots(text: str) -> list[Plot]:
    made: list[Plot] = []
    for table in tables(text):
        name = f"{_slug(table.section.split(':')[0])}-{len(made) + 1}"
        plot = _scaling(table, name) or _recall(table, name)
        if plot is not None:
            caption = _label(table.caption).rstrip(":")
            plot.title = _label(table.section) + (f"\n{caption}" if caption else "")
            made.append(plot)
    return made


def svg(plot: Plot) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": plot.name}):
        figure, axes = plt.subplots(figsize=(7.5, 4.2))
        for label, points in plot.series.items():
            xs, ys = zip(*points, strict=True)
            axes.plot(xs, ys, marker="o", markersize=4, label=label)
        axes.set_xscale("log" if plot.log_x else "linear")
        axes.set_yscale("log" if plot.log_y else "linear")
        axes.set(xlabel=plot.x_label, ylabel=plot.y_label)
        axes.set_title(plot.title, fontsize=9)
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        figure.tight_layout()
        out = io.BytesIO()
        figure.savefig(out, format="svg", metadata={"Date": None})
        plt.close(figure)
    return out.getvalue()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python benchmarks/plot_figures.py OUT_FOLDER", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    folder.mkdir(parents=True, exist_ok=True)
    for plot in plots(README.read_text()):
        (folder / f"{plot.name}.svg").write_bytes(svg(plot))
        print(folder / f"{plot.name}.svg", "-", plot.title.replace("\n", ": "))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
