"""Secrets hygiene (issue 4, point 6): planted secrets never show up where people look.

Distinctive secrets are planted (signing secrets, an Ed25519 key, a bearer token, a Basic password,
an OAuth client secret and the tokens it buys, a custom header value, the at-rest key), deliveries
are made to fail in every way we can arrange, and then every place an operator or an attacker
with read access could look is searched: log records at every level (in-process daemon), the
stderr of a `hookd run` process, `/metrics`, CLI output and CLI error messages, and every row of
hookd's tables. At rest, the database holds only `enc:v1:` values when a key is configured.
"""

from __future__ import annotations

import base64
import logging
import re
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from hookd.secretbox import SecretBox
from hookd.store import Store

from support.daemon import publish, running_daemon, wait_until
from support.proc import CliResult, DaemonProcess, run_cli, write_config
from support.receiver import Receiver

NO_KEY_WARNING = "no secret key configured"


def _whsec(tag: bytes) -> str:
    return "whsec_" + base64.b64encode(tag.ljust(32, b"#")).decode()


SIGNING = _whsec(b"PLANTED-signing-secret-current")
SIGNING_OLD = _whsec(b"PLANTED-signing-secret-previous")
ED25519 = "whsk_" + base64.b64encode(b"PLANTED-ed25519-seed-32-bytes!!!").decode()
BEARER = "PLANTED-bearer-token-8c1f"
BASIC_USER, BASIC_PASSWORD = "hookd", "PLANTED-basic-password-3e7a"
OAUTH_SECRET = "PLANTED-oauth-client-secret-55d2"
HEADER_VALUE = "PLANTED-header-value-a0b9"
BAD_SECRET = "whsec_PLANTED-not-base64-secret!"


def planted(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Every planted secret and the encodings a leak could take (base64 parts, the Basic header)."""
    basic_header = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    found = {
        "signing secret": SIGNING,
        "signing key": SIGNING.removeprefix("whsec_"),
        "previous signing secret": SIGNING_OLD.removeprefix("whsec_"),
        "ed25519 key": ED25519.removeprefix("whsk_"),
        "bearer token": BEARER,
        "basic password": BASIC_PASSWORD,
        "basic header": basic_header,
        "oauth client secret": OAUTH_SECRET,
        "custom header value": HEADER_VALUE,
        "invalid secret": BAD_SECRET.removeprefix("whsec_"),
        "token prefix": "PLANTED-access-token",
    }
    found.update({f"extra {i}": v for i, v in enumerate(extra)})
    return found


def assert_clean(where: str, text: str, secrets: dict[str, str]) -> None:
    leaks = [name for name, value in secrets.items() if value in text]
    assert not leaks, f"{where} shows: {', '.join(leaks)}"
    # And no rendered Authorization value of any kind.
    assert not re.search(r"(Bearer|Basic) [A-Za-z0-9+/=._-]{8,}", text), f"{where}: {text[:2000]}"


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@asynccontextmanager
async def token_server(client_secret: str) -> AsyncIterator[tuple[str, list[str]]]:
    """An OAuth token endpoint: the first request gets a 500, later ones a planted token."""
    issued: list[str] = []
    calls = [0]

    async def token(request: web.Request) -> web.Response:
        form = dict(x.split("=", 1) for x in (await request.text()).split("&"))
        calls[0] += 1
        if calls[0] == 1:
            return web.Response(status=500, text=f"echo: {form.get('client_secret')}")
        if form.get("client_secret") != client_secret:
            return web.json_response({"error": "invalid_client"}, status=401)
        issued.append(f"PLANTED-access-token-{len(issued) + 1}")
        return web.json_response({"access_token": issued[-1], "expires_in": 3600})

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/token", issued
    finally:
        await runner.cleanup()


async def keygen() -> str:
    result = await run_cli("keygen")
    assert result.returncode == 0, result.describe()
    key = result.stdout.strip()
    assert len(base64.b64decode(key, validate=True)) == 32
    return key


async def cli(*args: str) -> CliResult:
    result = await run_cli(*args)
    assert result.returncode == 0, result.describe()
    return result


async def dump_tables(db: asyncpg.Connection) -> str:
    parts = []
    for table in ("events", "endpoints", "deliveries", "attempts", "meta"):
        rows = await db.fetch(f"SELECT row_to_json(t)::text AS j FROM hookd.{table} t")
        parts += [r["j"] for r in rows]
    return "\n".join(parts)


# -- at rest ------------------------------------------------------------------------------------


async def test_secrets_at_rest_are_encrypted_and_the_daemon_still_signs(
    dsn: str,
    db: asyncpg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = await keygen()
    monkeypatch.setenv("HOOKD_SECRET_KEY", key)
    cfg = write_config(tmp_path / "hookd.toml", {"security": {"allow_http": True}})
    async with Receiver() as rx:
        added = await cli(
            "endpoint", "add", "--dsn", dsn, "--config", str(cfg), "--url", rx.url_for("/r"),
            "--secret", SIGNING_OLD, "--json",
        )  # fmt: skip
        ep_id = orjson.loads(added.stdout)["id"]
        await cli("endpoint", "rotate-secret", str(ep_id), "--secret", SIGNING, "--dsn", dsn)
        await cli("endpoint", "auth", str(ep_id), "--bearer", BEARER, "--header",
                  f"X-Api-Key: {HEADER_VALUE}", "--dsn", dsn)  # fmt: skip
        row = await db.fetchrow(
            "SELECT secret, previous_secret, credentials FROM hookd.endpoints WHERE id = $1", ep_id
        )
        assert row is not None
        for column in ("secret", "previous_secret", "credentials"):
            assert row[column].startswith("enc:v1:"), column
        assert_clean("hookd.endpoints", await dump_tables(db), planted((key,)))

        caplog.set_level(logging.DEBUG)
        await publish(db, "order.paid", {"id": 1})
        guard = {"security": {"ssrf_guard": True, "allow_cidrs": ["127.0.0.0/8"]}}
        async with running_daemon(dsn, guard):
            (rec,) = await rx.wait_for(1, path="/r", timeout_s=10)
    assert rec.headers["Authorization"] == f"Bearer {BEARER}"
    assert rec.headers["X-Api-Key"] == HEADER_VALUE
    # Two signatures during the grace period, one per secret, each verifying on its own.
    from standardwebhooks.webhooks import Webhook

    for secret in (SIGNING, SIGNING_OLD):
        Webhook(secret).verify(rec.body, dict(rec.headers.items()), json_parse=False)
    assert not any(NO_KEY_WARNING in r.getMessage() for r in caplog.records)

    # Without the key the masked list needs none and says "encrypted"; with another key the CLI
    # says so in one line; nothing is shown.
    monkeypatch.delenv("HOOKD_SECRET_KEY")
    result = await cli("endpoint", "list", "--dsn", dsn)
    assert "encrypted" in result.stdout, result.describe()
    monkeypatch.setenv("HOOKD_SECRET_KEY", await keygen())
    result = await run_cli("endpoint", "list", "--dsn", dsn)
    assert result.returncode == 2, result.describe()
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("hookd: error: ") and "decrypt" in line, line


async def test_without_a_key_the_daemon_warns_once_at_start_up(
    dsn: str,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("HOOKD_SECRET_KEY", raising=False)
    caplog.set_level(logging.DEBUG)
    async with Receiver() as rx:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        assert pool is not None
        try:
            await Store(pool).add_endpoint(rx.url_for("/w"), SIGNING)
        finally:
            await pool.close()
        guard = {"security": {"ssrf_guard": True, "allow_cidrs": ["127.0.0.0/8"]}}
        async with running_daemon(dsn, guard):
            start_warnings = [r for r in caplog.records if NO_KEY_WARNING in r.getMessage()]
            for i in range(3):
                await publish(db, "order.paid", {"i": i})
                await rx.wait_for(i + 1, timeout_s=10)
    warnings = [r for r in caplog.records if NO_KEY_WARNING in r.getMessage()]
    assert len(warnings) == 1 and warnings == start_warnings
    assert warnings[0].levelno == logging.WARNING
    # Without a key, values are stored as given (and the warning is the operator's cue).
    assert await db.fetchval("SELECT secret FROM hookd.endpoints") == SIGNING


# -- nothing leaks -------------------------------------------------------------------------------


async def test_planted_secrets_appear_in_no_log_metric_output_or_row(
    dsn: str,
    db: asyncpg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    closed_port: int,
) -> None:
    key = await keygen()
    monkeypatch.setenv("HOOKD_SECRET_KEY", key)
    box = SecretBox(base64.b64decode(key))
    caplog.set_level(logging.DEBUG)
    async with token_server(OAUTH_SECRET) as (token_url, issued), Receiver() as rx:
        rx.script("/bearer", [500])
        rx.script("/headers", [401])
        rx.script("/oauth", [401, 204])
        rx.secrets["/ok"] = SIGNING
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        assert pool is not None
        store = Store(pool, box=box)
        try:
            ep = {}
            for name, url, secret in [
                ("ok", rx.url_for("/ok"), SIGNING_OLD),
                ("ed25519", rx.url_for("/ed"), ED25519),
                ("bearer", rx.url_for("/bearer"), SIGNING),
                ("headers", rx.url_for("/headers"), SIGNING),
                ("basic", f"http://127.0.0.1:{closed_port}/basic", SIGNING),
                ("oauth", rx.url_for("/oauth"), SIGNING),
                ("refused", f"http://127.0.0.2:{rx.port}/refused", SIGNING),
                ("tls", f"https://127.0.0.1:{rx.port}/tls", SIGNING),
                ("bad secret", rx.url_for("/bad"), BAD_SECRET),
            ]:
                ep[name] = (await store.add_endpoint(url, secret)).id
            await store.rotate_secret(ep["ok"], SIGNING, 3600.0)
            await store.set_credentials(ep["bearer"], {"bearer": BEARER})
            await store.set_credentials(ep["headers"], {"headers": {"X-Api-Key": HEADER_VALUE}})
            await store.set_credentials(
                ep["basic"], {"basic": {"username": BASIC_USER, "password": BASIC_PASSWORD}}
            )
            await store.set_credentials(
                ep["oauth"],
                {
                    "oauth2": {
                        "token_url": token_url,
                        "client_id": "c",
                        "client_secret": OAUTH_SECRET,
                    }
                },
            )
            await store.set_credentials(ep["refused"], {"bearer": BEARER})
            await store.set_credentials(ep["tls"], {"headers": {"X-Api-Key": HEADER_VALUE}})
        finally:
            await pool.close()

        await publish(db, "order.paid", {"id": 1})
        overrides: dict[str, dict[str, Any]] = {
            "security": {"ssrf_guard": True, "allow_cidrs": ["127.0.0.1/32"]},
            "retry": {"schedule_s": [0.0, 0.2, 0.2], "max_attempts": 3, "jitter": 0.0},
        }
        async with running_daemon(dsn, overrides) as daemon:
            await wait_until(
                db,
                "SELECT count(*) = $1 FROM hookd.deliveries WHERE state IN ('delivered', 'failed')",
                len(ep),
                timeout_s=20,
            )
            assert daemon.admin is not None
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{daemon.admin.port}/metrics") as resp,
            ):
                metrics = await resp.text()

    secrets = planted((key, *issued))
    states = dict(await db.fetch("SELECT endpoint_id, state FROM hookd.deliveries"))
    assert states[ep["ok"]] == states[ep["ed25519"]] == states[ep["oauth"]] == "delivered"
    assert rx.requests_for("/ok")[0].verified
    assert issued, "the OAuth path ran (token fetched after the token server's 500)"
    failed = {n for n, i in ep.items() if states[i] == "failed"}
    assert failed == {"bearer", "headers", "basic", "refused", "tls", "bad secret"}

    log_text = "\n".join(
        logging.Formatter("%(levelname)s %(name)s %(message)s").format(r) for r in caplog.records
    )
    assert "refused by the SSRF guard" in log_text, "failures were logged"
    assert_clean("daemon log records", log_text, secrets)
    assert_clean("/metrics", metrics, secrets)
    rows = await dump_tables(db)
    assert "refused by the SSRF guard" in rows and "TLS error" in rows
    assert_clean("hookd tables", rows, secrets)

    for args in (
        ["endpoint", "list"],
        ["endpoint", "list", "--json"],
        ["deliveries"],
        ["deliveries", "--json"],
        ["deliveries", "--state", "failed", "--json"],
        ["status"],
        ["status", "--json"],
    ):
        out = await cli(*args, "--dsn", dsn)
        assert_clean(f"hookd {' '.join(args)}", out.stdout + out.stderr, secrets)
    listing = orjson.loads((await cli("endpoint", "list", "--json", "--dsn", dsn)).stdout)
    assert {e["secret"] for e in listing} <= {"whsec_…", "whsk_…"}

    # CLI errors about credentials name the problem, never the value.
    for args in (
        ["--header", f"webhook-id: {HEADER_VALUE}"],
        ["--header", f"Content-Type: {HEADER_VALUE}"],
        ["--header", f"Bad Name: {HEADER_VALUE}"],
        ["--bearer", BEARER, "--basic", f"{BASIC_USER}:{BASIC_PASSWORD}"],
        ["--basic", f"a:b:{BASIC_PASSWORD}", "--header", f"Authorization: {HEADER_VALUE}"],
    ):
        result = await run_cli("endpoint", "auth", str(ep["ok"]), *args, "--dsn", dsn)
        assert result.returncode == 2, result.describe()
        assert_clean("CLI error", result.stdout + result.stderr, secrets)
    bad = await run_cli("endpoint", "add", "--dsn", dsn, "--url", "https://x.example/h",
                        "--secret", BAD_SECRET)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("hookd: error: --secret")
    assert_clean("CLI error", bad.stdout + bad.stderr, secrets)


async def test_hookd_run_stderr_shows_no_secrets_and_warns_once(
    dsn: str,
    db: asyncpg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    closed_port: int,
) -> None:
    monkeypatch.delenv("HOOKD_SECRET_KEY", raising=False)
    async with Receiver() as rx:
        rx.script("/fail", [503])
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        assert pool is not None
        try:
            store = Store(pool)
            fail = await store.add_endpoint(rx.url_for("/fail"), SIGNING)
            refused = await store.add_endpoint(f"http://127.0.0.1:{closed_port}/x", SIGNING)
            bad = await store.add_endpoint(rx.url_for("/bad"), BAD_SECRET)
            await store.set_credentials(
                fail.id, {"bearer": BEARER, "headers": {"X-K": HEADER_VALUE}}
            )
            await store.set_credentials(
                refused.id, {"basic": {"username": BASIC_USER, "password": BASIC_PASSWORD}}
            )
            await store.set_credentials(bad.id, {"bearer": BEARER})
        finally:
            await pool.close()
        for fmt in ("text", "json"):
            config = write_config(
                tmp_path / f"hookd-{fmt}.toml",
                {
                    "log": {"level": "debug", "format": fmt},
                    "security": {"ssrf_guard": True, "allow_cidrs": ["127.0.0.1/32"]},
                    "retry": {"schedule_s": [0.0, 0.2], "max_attempts": 2, "jitter": 0.0},
                },
            )
            await db.execute("DELETE FROM hookd.attempts; DELETE FROM hookd.deliveries")
            await publish(db, "order.paid", {"fmt": fmt})
            async with DaemonProcess(dsn, config, name=f"hookd-{fmt}") as proc:
                await wait_until(
                    db,
                    "SELECT count(*) = 3 FROM hookd.deliveries WHERE state = 'failed'",
                    timeout_s=20,
                )
                await proc.wait_for_line("failed", timeout_s=10)
                proc.send(signal.SIGTERM)
                assert await proc.wait_exit(20) == 0
            assert_clean(f"hookd run stderr ({fmt})", proc.stderr, planted())
            assert proc.stderr.count(NO_KEY_WARNING) == 1, proc.stderr
            assert "Traceback" not in proc.stderr


async def test_daemon_with_the_wrong_key_stops_with_one_clear_line(
    dsn: str, db: asyncpg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong key is a configuration error: `hookd run` must say so in one line (exit 2), like
    every other configuration error, not die later with an exception-group traceback."""
    monkeypatch.setenv("HOOKD_SECRET_KEY", await keygen())
    await cli("endpoint", "add", "--dsn", dsn, "--url", "https://receiver.example/hook")
    monkeypatch.setenv("HOOKD_SECRET_KEY", await keygen())
    config = write_config(tmp_path / "hookd.toml")
    result = await run_cli("run", "--dsn", dsn, "--config", str(config), timeout_s=15)
    stderr = result.stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    assert result.returncode == 2, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("hookd: error: ")]
    assert len(errors) == 1 and "decrypt" in errors[0], stderr[-3000:]


# -- commands that show no secret need no key ----------------------------------------------------


async def test_commands_that_show_no_secret_run_without_the_key(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key configured only in hookd.toml (security.secret_key_file): `HOOKD_DSN=... hookd
    status` (docs/operations.md) and the masked endpoint views must not need it."""
    monkeypatch.delenv("HOOKD_SECRET_KEY", raising=False)
    key_file = tmp_path / "hookd.key"
    key_file.write_text(await keygen() + "\n", encoding="ascii")
    cfg = write_config(tmp_path / "hookd.toml", {"security": {"secret_key_file": str(key_file)}})
    added = await cli(
        "endpoint", "add", "--dsn", dsn, "--config", str(cfg),
        "--url", "https://receiver.example/hook", "--secret", SIGNING, "--json",
    )  # fmt: skip
    ep_id = str(orjson.loads(added.stdout)["id"])
    for args in (
        ("status",),
        ("endpoint", "list"),
        ("endpoint", "show", ep_id),
        ("endpoint", "show", ep_id, "--json"),
        ("endpoint", "update", ep_id, "--description", "x"),
        ("endpoint", "settings", ep_id, "--timeout", "3"),
    ):
        result = await run_cli(*args, "--dsn", dsn)
        assert result.returncode == 0, result.describe()
        assert_clean(" ".join(args), result.stdout + result.stderr, planted())
    shown = await cli("endpoint", "show", ep_id, "--dsn", dsn)
    assert "encrypted" in shown.stdout, shown.stdout


async def test_daemon_without_the_key_names_both_settings_and_does_not_claim_plaintext(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOKD_SECRET_KEY", await keygen())
    await cli("endpoint", "add", "--dsn", dsn, "--url", "https://receiver.example/hook")
    monkeypatch.delenv("HOOKD_SECRET_KEY")
    config = write_config(tmp_path / "hookd.toml")
    result = await run_cli("run", "--dsn", dsn, "--config", str(config), timeout_s=15)
    stderr = result.stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    assert result.returncode == 2, stderr[-3000:]
    assert NO_KEY_WARNING not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("hookd: error: ")]
    assert len(errors) == 1, stderr[-3000:]
    assert "security.secret_key_file" in errors[0] and "HOOKD_SECRET_KEY" in errors[0], errors
