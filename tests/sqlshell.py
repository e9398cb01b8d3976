"""Running the SQL batteries of tests/sql/ through the real sqlite3 shell."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent / "sql"
FUNCTIONS_SQL = SQL_DIR / "functions.sql"
ERRORS_SQL = SQL_DIR / "errors.sql"

# 3.40 prints "Runtime error near line N: msg" (or "Parse error ..." when the
# statement cannot be prepared), older shells "Error: near line N: msg".
SHELL_ERROR = re.compile(r"^(?:Runtime error|Parse error|Error:) near line (\d+): (.*)$")
WHY_NO_SHELL = "the sqlite3 shell is not installed (apt-get install sqlite3)"


def sqlite3_shell() -> str | None:
    return shutil.which("sqlite3")


def run_shell(
    extension: str, sql: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``sql`` in ``sqlite3 :memory:`` after ``.load extension``."""
    shell = sqlite3_shell()
    assert shell, WHY_NO_SHELL
    return subprocess.run(
        [shell, "-batch", ":memory:", "-cmd", f".load {extension}"],
        input=sql,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def battery_names(sql: str) -> list[str]:
    return re.findall(r"^select '([^']+)',", sql, flags=re.MULTILINE | re.IGNORECASE)


def expected_errors(sql: str) -> dict[int, str]:
    """Line number -> message, from the ``-- message`` comment ending each statement."""
    expected = {}
    for number, line in enumerate(sql.splitlines(), start=1):
        statement, sep, message = line.partition("; -- ")
        if sep and statement.lower().startswith("select"):
            expected[number] = message
    return expected


def shell_errors(stderr: str) -> dict[int, str]:
    errors = {}
    for line in stderr.splitlines():
        match = SHELL_ERROR.match(line)
        if match:
            errors[int(match.group(1))] = match.group(2)
    return errors


def check_functions_battery(result: subprocess.CompletedProcess[str], sql: str) -> None:
    names = battery_names(sql)
    assert len(names) > 40 and len(set(names)) == len(names)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    rows = result.stdout.splitlines()
    failed = [row for row in rows if not row.endswith("|1")]
    assert not failed, f"failing checks: {failed}"
    assert [row.rsplit("|", 1)[0] for row in rows] == names


def check_errors_battery(result: subprocess.CompletedProcess[str], sql: str) -> None:
    expected = expected_errors(sql)
    assert len(expected) > 15
    assert result.stdout == ""
    assert shell_errors(result.stderr) == expected


def expected_error_lines(sql: str) -> dict[int, str]:
    """Line number -> message, from statements ending in ``; -- error: message``."""
    expected = {}
    for number, line in enumerate(sql.splitlines(), start=1):
        _, sep, message = line.partition("; -- error: ")
        if sep:
            expected[number] = message
    return expected


def check_battery(result: subprocess.CompletedProcess[str], sql: str) -> None:
    """A script mixing checks (``select 'name', <true>;`` prints ``name|1``)
    and statements that must fail (``...; -- error: message``)."""
    names = battery_names(sql)
    assert len(set(names)) == len(names)
    rows = result.stdout.splitlines()
    assert [row.rsplit("|", 1)[0] for row in rows] == names, result.stderr[-3000:]
    failed = [row for row in rows if not row.endswith("|1")]
    assert not failed, f"failing checks: {failed}"
    assert shell_errors(result.stderr) == expected_error_lines(sql)
