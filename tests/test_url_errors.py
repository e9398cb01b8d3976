"""A database URL that is wrong is one line naming what is wrong, never a secret."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from facevec.cli import cli
from facevec.errors import DatabaseURLError
from facevec.storage.urls import parse_url, redact

SECRET = "S3cretPW"

# (URL, what the one line must name)
BAD_URLS = [
    (f"postgresql://postgres@127.0.0.1:abc/test?password={SECRET}", "bad port"),
    (f"postgresql://u:{SECRET}@[::1/test", "bad host"),
    (f"mysql://root:{SECRET}@127.0.0.1:3306/test?connect_timeout=abc", "'connect_timeout'"),
    (f"mysql://root:{SECRET}@127.0.0.1:3306/test?charset=bogus", "'charset'"),
    (f"mysql://root@127.0.0.1:3306/test?ssl_ca=/nonexistent&password={SECRET}", "'ssl_ca'"),
    (f"mysql://root:{SECRET}@127.0.0.1:3306/test?sslkey={SECRET}", "'sslkey'"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:1/test?sslpassword={SECRET}", "127.0.0.1:1"),
    (f"postgresql://postgres@127.0.0.1:5432/test?sslmode=bogus&password={SECRET}", "sslmode"),
    (f"postgresql://postgres@127.0.0.1:5432/test?bogus_param=1&sslkey={SECRET}", "bogus_param"),
    (f"mysql://root:{SECRET}@127.0.0.1:1/test", "127.0.0.1:1"),
]


@pytest.mark.parametrize(("url", "named"), BAD_URLS)
def test_a_bad_url_is_one_line_without_its_secrets(url, named):
    pytest.importorskip("psycopg" if url.startswith("postgresql") else "pymysql")
    result = CliRunner().invoke(cli, ["info", "--db", url])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    assert named in result.output
    assert SECRET not in result.output


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{SECRET}@h/db?sslpassword={SECRET}&application_name=x",
        f"mysql://u:{SECRET}@h/db?client_secret={SECRET}",
        f"postgres://u:{SECRET}@h:5/db?sslkey={SECRET}&SSLKEY={SECRET}",
    ],
)
def test_redaction_removes_every_secret_and_keeps_the_rest(url):
    text = redact(url)
    assert SECRET not in text and "***" in text
    assert text.split("://")[0] == url.split("://")[0] and "@h" in text
    assert SECRET not in parse_url(url).redacted() and SECRET not in repr(parse_url(url))


def test_parse_errors_are_url_errors():
    with pytest.raises(DatabaseURLError, match="unsupported database URL scheme 'oracle'"):
        parse_url(f"oracle://u:{SECRET}@h/db")
