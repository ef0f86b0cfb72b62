"""Endpoint URL validation at creation and on every change (issue 4, point 5).

`hookd.endpoints.validate_url` is checked directly for every rule; the CLI (`endpoint add`,
`endpoint set-url`) for the user's view: exit status 2, one line "hookd: error: ...", nothing
stored or changed.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from hookd.endpoints import MAX_URL_LENGTH, validate_url
from hookd.errors import InvalidEndpoint

from support.daemon import add_endpoint
from support.proc import CliResult, run_cli, write_config

BAD_URLS = {
    "plain http": ("http://receiver.example/hook", "scheme must be https"),
    "no scheme": ("receiver.example/hook", "scheme must be https"),
    "ftp": ("ftp://receiver.example/hook", "scheme must be https"),
    "file": ("file:///etc/passwd", "scheme must be https"),
    "javascript": ("javascript:alert(1)", "scheme must be https"),
    "gopher": ("gopher://127.0.0.1:6379/_", "scheme must be https"),
    "user and password": ("https://user:s3cret-pw@receiver.example/hook", "credentials"),
    "user only": ("https://user@receiver.example/hook", "credentials"),
    "empty userinfo": ("https://@receiver.example/hook", "credentials"),
    "no host": ("https:///hook", "no host"),
    "port only": ("https://:443/hook", "no host"),
    "fragment": ("https://receiver.example/hook#part", "fragment"),
    "space": ("https://receiver.example/ho ok", "whitespace or control"),
    "leading space": (" https://receiver.example/hook", "whitespace or control"),
    "tab": ("https://receiver.example/\thook", "whitespace or control"),
    "newline": ("https://receiver.example/hook\n", "whitespace or control"),
    "CRLF injection": ("https://receiver.example/hook\r\nX-Evil: 1", "whitespace or control"),
    "NUL": ("https://receiver.example/ho\x00ok", "whitespace or control"),
    "DEL": ("https://receiver.example/ho\x7fok", "whitespace or control"),
    "no-break space": ("https://receiver.example/ho\u00a0ok", "whitespace or control"),
    "line separator": ("https://receiver.example/ho\u2028ok", "whitespace or control"),
    "too long": ("https://receiver.example/" + "a" * MAX_URL_LENGTH, "at most 2048"),
    "port 0": ("https://receiver.example:0/hook", "port"),
    "port too big": ("https://receiver.example:65536/hook", "malformed"),
    "port not a number": ("https://receiver.example:https/hook", "malformed"),
    "broken IPv6": ("https://[::1/hook", "malformed"),
}


@pytest.mark.parametrize("case", list(BAD_URLS))
def test_validate_url_refuses(case: str) -> None:
    url, message = BAD_URLS[case]
    with pytest.raises(InvalidEndpoint, match=message) as info:
        validate_url(url, allow_http=False)
    assert "s3cret-pw" not in str(info.value), "credentials in a URL are not echoed"


@pytest.mark.parametrize(
    "url",
    [
        "https://receiver.example/hook",
        "https://receiver.example:8443/a/b?x=1&y=2",
        "https://[2001:db8::1]:8443/hook",
        "https://münchen.example/hook",
        "https://receiver.example/" + "a" * (MAX_URL_LENGTH - len("https://receiver.example/")),
    ],
)
def test_validate_url_accepts(url: str) -> None:
    assert validate_url(url, allow_http=False) == url


def test_http_only_when_allowed() -> None:
    assert validate_url("http://receiver.example/hook", allow_http=True)
    for url in ("ftp://receiver.example/", "ws://receiver.example/"):
        with pytest.raises(InvalidEndpoint, match="https or http"):
            validate_url(url, allow_http=True)


def assert_one_error_line(result: CliResult, needle: str) -> None:
    assert result.returncode == 2, result.describe()
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hookd: error: "), result.describe()
    assert needle in lines[0], result.describe()
    assert "Traceback" not in result.stderr and result.stdout == ""


CLI_CASES = ["plain http", "user and password", "no host", "fragment", "CRLF injection", "too long"]


async def test_cli_endpoint_add_refuses_bad_urls(dsn: str, db: asyncpg.Connection) -> None:
    for case in CLI_CASES:
        url, message = BAD_URLS[case]
        result = await run_cli("endpoint", "add", "--dsn", dsn, "--url", url)
        assert_one_error_line(result, message)
        assert "s3cret-pw" not in result.stderr
    assert await db.fetchval("SELECT count(*) FROM hookd.endpoints") == 0


async def test_cli_set_url_refuses_bad_urls_and_keeps_the_old_one(
    dsn: str, db: asyncpg.Connection
) -> None:
    ep_id, _ = await add_endpoint(dsn, "https://receiver.example/hook")
    for case in ("plain http", "user and password", "newline"):
        url, message = BAD_URLS[case]
        result = await run_cli("endpoint", "set-url", str(ep_id), "--url", url, "--dsn", dsn)
        assert_one_error_line(result, message)
    assert await db.fetchval("SELECT url FROM hookd.endpoints") == "https://receiver.example/hook"
    ok = await run_cli(
        "endpoint", "set-url", str(ep_id), "--url", "https://new.example/h", "--dsn", dsn
    )
    assert ok.returncode == 0, ok.describe()
    assert await db.fetchval("SELECT url FROM hookd.endpoints") == "https://new.example/h"


async def test_cli_accepts_http_only_with_allow_http(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "hookd.toml", {"security": {"allow_http": True}})
    added = await run_cli(
        "endpoint", "add", "--dsn", dsn, "--config", str(config),
        "--url", "http://receiver.example/hook",
    )  # fmt: skip
    assert added.returncode == 0, added.describe()
    ep_id = await db.fetchval("SELECT id FROM hookd.endpoints")
    moved = await run_cli(
        "endpoint", "set-url", str(ep_id), "--url", "http://other.example/hook",
        "--dsn", dsn, "--config", str(config),
    )  # fmt: skip
    assert moved.returncode == 0, moved.describe()
    # allow_http does not relax the other rules.
    creds = await run_cli(
        "endpoint", "add", "--dsn", dsn, "--config", str(config),
        "--url", "http://u:p@receiver.example/hook",
    )  # fmt: skip
    assert_one_error_line(creds, "credentials")
