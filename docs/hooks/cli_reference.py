"""MkDocs hook: the command line reference, generated from the commands' own help.

Where a page holds the marker line, every facevec command's ``--help`` is written,
exactly as the terminal prints it, so the reference cannot fall behind the code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click

MARKER = "<!-- the help of every facevec command -->"
WIDTH = 78


def _sections(command: click.Command, path: list[str], parent: Any) -> Iterator[str]:
    context = click.Context(
        command, info_name=path[-1], parent=parent, terminal_width=WIDTH, max_content_width=WIDTH
    )
    heading = "#" * min(len(path) + 1, 4)
    yield f"{heading} {' '.join(path)}\n\n```text\n{command.get_help(context)}\n```\n"
    if isinstance(command, click.Group):
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            if sub is not None and not sub.hidden:
                yield from _sections(sub, [*path, name], context)


def reference() -> str:
    from facevec.cli import cli

    return "\n".join(_sections(cli, ["facevec"], None))


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return markdown.replace(MARKER, reference()) if MARKER in markdown else markdown
