"""The command line as a user meets it: exit statuses, one-line errors, migrations, endpoints.

A user mistake must end with exit status 2 and exactly one line on stderr, starting with
"hookd: error:" and naming the key or the problem; never a traceback.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from support.proc import CliResult, run_cli, write_config


@pytest.fixture
def closed_port_dsn() -> Iterator[str]:
    """A DSN to 127.0.0.1 on a port that refuses connections.

    The socket is bound but never listens, so connecting gets a RST, and no other process can
    take the port while the test runs.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        yield f"postgresql://hookd@127.0.0.1:{port}/hookd?connect_timeout=5"


def assert_one_error_line(result: CliResult, *needles: str) -> str:
    """Exit 2, nothing on stdout, and stderr is one line "hookd: error: ..." naming every needle."""
    assert result.returncode == 2, result.describe()
    assert "Traceback" not in result.stderr + result.stdout, result.describe()
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("hookd: error: ")]
    assert len(errors) == 1, result.describe()
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not named in the error; {result.describe()}"
    assert result.stdout == "", result.describe()
    others = [line for line in lines if line not in errors]
    assert not others, f"stderr holds more than the error line: {others}"
    return errors[0]


# -- hookd run: configuration and database problems -----------------------------------------------

# Every case also has a valid, unreachable --dsn: if the file were accepted, the error would be
# about the database instead, and the needle check would fail.
CONFIG_CASES = {
    "unknown key": ("[daemon]\nlease_seconds = 5.0\n", ["daemon.lease_seconds", "unknown"]),
    "unknown section": ("[deamon]\nlease_s = 5.0\n", ["[deamon]", "unknown section"]),
    "wrong type": ('[daemon]\nlease_s = "five"\n', ["daemon.lease_s", "number"]),
    "wrong type, bool for int": ("[http]\nper_host_limit = true\n", ["http.per_host_limit"]),
    "lease not above total timeout": (
        "[daemon]\nlease_s = 3.0\n[http]\ntotal_timeout_s = 3.0\n",
        ["daemon.lease_s", "http.total_timeout_s"],
    ),
    "negative value": ("[daemon]\npoll_interval_s = -1\n", ["daemon.poll_interval_s"]),
    "TOML syntax error": ("[daemon\nlease_s = 5.0\n", ["invalid TOML"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
async def test_run_with_invalid_config_fails_with_one_line(
    case: str, tmp_path: Path, closed_port_dsn: str
) -> None:
    text, needles = CONFIG_CASES[case]
    path = tmp_path / "hookd.toml"
    path.write_text(text, encoding="utf-8")
    result = await run_cli("run", "--dsn", closed_port_dsn, "--config", str(path), timeout_s=20)
    line = assert_one_error_line(result, *needles)
    if case == "TOML syntax error":
        assert str(path) in line, "the error names the file"


async def test_run_with_missing_config_file(tmp_path: Path, closed_port_dsn: str) -> None:
    path = tmp_path / "nowhere" / "hookd.toml"
    result = await run_cli("run", "--dsn", closed_port_dsn, "--config", str(path), timeout_s=20)
    assert_one_error_line(result, str(path), "no such configuration file")


async def test_run_with_unreachable_database(tmp_path: Path, closed_port_dsn: str) -> None:
    cfg = write_config(tmp_path / "hookd.toml")
    result = await run_cli("run", "--dsn", closed_port_dsn, "--config", str(cfg), timeout_s=20)
    assert_one_error_line(result, "cannot connect to the database")


async def test_run_without_schema_says_to_migrate(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await db.execute("DROP SCHEMA hookd CASCADE")
    cfg = write_config(tmp_path / "hookd.toml")
    result = await run_cli("run", "--dsn", dsn, "--config", str(cfg), timeout_s=20)
    assert_one_error_line(result, "hookd migrate")


async def test_migrate_twice_second_has_nothing_to_do(dsn: str, db: asyncpg.Connection) -> None:
    await db.execute("DROP SCHEMA hookd CASCADE")
    first = await run_cli("migrate", "--dsn", dsn)
    assert first.returncode == 0, first.describe()
    assert first.stdout.startswith("applied migrations "), first.describe()
    assert await db.fetchval("SELECT to_regclass('hookd.events') IS NOT NULL")
    versions = await db.fetch("SELECT version, applied_at FROM hookd.schema_migrations")

    again = await run_cli("migrate", "--dsn", dsn)
    assert again.returncode == 0, again.describe()
    assert "nothing to do" in again.stdout and "applied" not in again.stdout, again.describe()
    assert await db.fetch("SELECT version, applied_at FROM hookd.schema_migrations") == versions


# -- hookd endpoint ---------------------------------------------------------------------------------

BAD_URLS = {
    "ftp://127.0.0.1/hook": "scheme",
    "https://user:pw@127.0.0.1/hook": "credentials",
    "https:///hook": "no host",
    "127.0.0.1/hook": "scheme",
    # Plain http only with `security.allow_http` (not set here).
    "http://127.0.0.1/hook": "https",
}


@pytest.mark.parametrize("url", list(BAD_URLS))
async def test_endpoint_add_rejects_invalid_url(url: str, closed_port_dsn: str) -> None:
    # The URL is checked before the database is reached (the DSN here refuses connections).
    result = await run_cli("endpoint", "add", "--dsn", closed_port_dsn, "--url", url)
    assert_one_error_line(result, BAD_URLS[url])
    if "pw@" in url:
        assert "pw" not in result.stderr, "the password is not echoed back"


async def test_endpoint_add_list_disable_enable(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    # A loopback URL needs the SSRF guard opened for it (write_config allows 127.0.0.0/8).
    cfg = str(write_config(tmp_path / "hookd.toml"))
    url = "https://127.0.0.1:9/hooks/orders"
    added = await run_cli(
        "endpoint", "add", "--dsn", dsn, "--config", cfg, "--url", url, "--event-types", "order.*"
    )
    assert added.returncode == 0, added.describe()
    m = re.fullmatch(r"endpoint (\d+)\nsecret (whsec_\S+)\n", added.stdout)
    assert m, added.describe()
    ep_id, secret = int(m.group(1)), m.group(2)
    row = await db.fetchrow("SELECT url, secret, event_types, enabled FROM hookd.endpoints")
    assert dict(row) == {"url": url, "secret": secret, "event_types": ["order.*"], "enabled": True}

    listed = await run_cli("endpoint", "list", "--dsn", dsn)
    assert listed.returncode == 0, listed.describe()
    assert url in listed.stdout and str(ep_id) in listed.stdout, listed.describe()
    assert secret not in listed.stdout, "endpoint list shows the whole secret"
    as_json = await run_cli("endpoint", "list", "--dsn", dsn, "--json")
    assert as_json.returncode == 0, as_json.describe()
    assert secret not in as_json.stdout, "endpoint list --json shows the whole secret"
    (entry,) = orjson.loads(as_json.stdout)
    assert (entry["id"], entry["url"], entry["enabled"]) == (ep_id, url, True)

    disabled = await run_cli("endpoint", "disable", "--dsn", dsn, str(ep_id))
    assert disabled.returncode == 0, disabled.describe()
    assert await db.fetchval("SELECT enabled FROM hookd.endpoints WHERE id = $1", ep_id) is False
    as_json = await run_cli("endpoint", "list", "--dsn", dsn, "--json")
    assert orjson.loads(as_json.stdout)[0]["enabled"] is False, as_json.describe()

    enabled = await run_cli("endpoint", "enable", "--dsn", dsn, str(ep_id))
    assert enabled.returncode == 0, enabled.describe()
    assert await db.fetchval("SELECT enabled FROM hookd.endpoints WHERE id = $1", ep_id) is True

    for action in ("disable", "enable"):
        unknown = await run_cli("endpoint", action, "--dsn", dsn, str(ep_id + 1000))
        assert_one_error_line(unknown, "no endpoint", str(ep_id + 1000))
    assert await db.fetchval("SELECT count(*) FROM hookd.endpoints") == 1


@pytest.mark.parametrize("with_db", [False, True], ids=["keygen", "endpoint-add"])
async def test_a_closed_stdout_pipe_ends_quietly(dsn: str, with_db: bool) -> None:
    """`hookd ... | head -1`: the reader is gone before hookd writes; no BrokenPipeError
    traceback, exit 141 (128 + SIGPIPE, what a shell reports for a killed writer)."""
    args = (
        ["endpoint", "add", "--dsn", dsn, "--url", "https://receiver.example/h"]
        if with_db
        else ["keygen"]
    )
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hookd", *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=write_end, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    finally:
        os.close(write_end)
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert err.decode() == "", err.decode()
    assert proc.returncode == 141
