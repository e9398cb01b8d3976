"""MkDocs hook: plots of the benchmark figures, drawn when the site is built.

benchmarks/plot_figures.py reads the tables of benchmarks/README.md; each plot becomes
an SVG of the site, and the page holding the marker line shows them all, so the plots
always show the figures the README holds.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

MARKER = "<!-- plots of the benchmark figures -->"
FOLDER = "images/benchmarks"
_section = ""


def _plot_figures(root: Path) -> Any:
    path = root / "benchmarks" / "plot_figures.py"
    spec = importlib.util.spec_from_file_location("plot_figures", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def on_files(files: Files, config: Any) -> Files:
    global _section
    plot_figures = _plot_figures(Path(config.config_file_path).parent)
    shown = []
    for plot in plot_figures.plots(plot_figures.README.read_text()):
        uri = f"{FOLDER}/{plot.name}.svg"
        files.append(File.generated(config, uri, content=plot_figures.svg(plot)))
        shown.append(f"![{plot.title.replace(chr(10), ': ')}]({uri})")
    _section = "\n\n".join(shown)
    return files


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return markdown.replace(MARKER, _section) if MARKER in markdown else markdown
