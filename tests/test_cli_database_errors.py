"""A database driver's error on the command line: one readable line."""

from __future__ import annotations

import sqlite3

import click
import pytest

from facevec.cli.main import fail_cleanly


def _failing(message: str):
    @fail_cleanly
    def command() -> None:
        raise sqlite3.OperationalError(message)

    return command


def test_a_server_message_over_several_lines_is_one_readable_line():
    server = (
        "no schema has been selected to create in\n"
        "LINE 1: CREATE TABLE IF NOT EXISTS facevec_collection (\n"
        "                                   ^\n"
        "HINT:  Create the schema first.\n"
    )
    with pytest.raises(click.ClickException) as raised:
        _failing(server)()
    message = raised.value.message
    assert message == (
        "database error: no schema has been selected to create in; HINT:  Create the schema first."
    )
    assert "\\x0a" not in message and "LINE 1" not in message


def test_a_one_line_message_is_kept_whole_and_control_characters_escaped():
    with pytest.raises(click.ClickException) as raised:
        _failing("database is locked\x1b[31m")()
    assert raised.value.message == "database error: database is locked\\x1b[31m"
