"""Authenticating to endpoints against real servers on loopback (issue 4, point 3).

A `Gate` is an HTTP(S) server that demands one credential per path and answers 401 without it; a
`TokenServer` issues OAuth 2.0 client-credentials tokens the gate then accepts. mTLS uses
certificates from `trustme` and a server that requires a client certificate (CERT_REQUIRED).
Credentials are set through the CLI, as an operator would.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs

import asyncpg
import orjson
import pytest
import trustme
from aiohttp import web
from multidict import CIMultiDictProxy
from standardwebhooks.webhooks import Webhook as StandardWebhook

from support.daemon import add_endpoint, publish, running_daemon, wait_until
from support.proc import CliResult, run_cli, write_config

# One row per attempt. A daemon stopped right after writing an outcome can log the same attempt
# twice (the writer re-queues a batch whose COMMIT was interrupted by shutdown's cancellation and
# writes it again); that engine issue is reported on its own, so counts here use distinct attempts.
ATTEMPTS = (
    "(SELECT DISTINCT ON (delivery_id, attempt) * FROM hookd.attempts"
    " ORDER BY delivery_id, attempt, started_at)"
)

GUARD_LOOPBACK: dict[str, dict[str, Any]] = {
    "security": {"ssrf_guard": True, "allow_cidrs": ["127.0.0.0/8", "::1/128"]}
}
# Failure cases: two attempts are enough to show the outcome, and keep the tests short.
TWO_ATTEMPTS: dict[str, dict[str, Any]] = {
    **GUARD_LOOPBACK,
    "retry": {"schedule_s": [0.0, 0.2], "max_attempts": 2, "jitter": 0.0},
}

Rule = Callable[[CIMultiDictProxy[str]], bool]


@dataclass(frozen=True, slots=True)
class Seen:
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes
    status: int
    peer_cert: dict[str, Any] | None


class Gate:
    """An HTTP server on 127.0.0.1 answering 204 when a path's rule accepts the request, else 401.

    With `ssl_context` it serves HTTPS (and with CERT_REQUIRED demands a client certificate).
    """

    def __init__(self, rules: dict[str, Rule], ssl_context: ssl.SSLContext | None = None) -> None:
        self.rules = rules
        self.seen: list[Seen] = []
        self.port = 0
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        rule = self.rules.get(request.path)
        status = 204 if rule is not None and rule(request.headers) else 401
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        self.seen.append(Seen(request.path, request.headers, body, status, peer))
        async with self._changed:
            self._changed.notify_all()
        return web.Response(status=status)

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        async with asyncio.timeout(10):
            await self._runner.cleanup()

    def for_path(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(predicate)
        except TimeoutError:
            got = [(s.path, s.status) for s in self.seen]
            raise AssertionError(f"gate: condition not met in {timeout_s}s; saw {got}") from None


class TokenServer:
    """OAuth 2.0 token endpoint (RFC 6749 section 4.4) on 127.0.0.1 issuing opaque tokens.

    Only `client_id`/`client_secret` get a token; `valid` holds the tokens receivers accept.
    `status` (when set) replaces every answer, to simulate an outage.
    """

    def __init__(self, client_id: str, client_secret: str, expires_in: int = 3600) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.expires_in = expires_in
        self.valid: set[str] = set()
        self.issued: list[str] = []
        self.forms: list[dict[str, list[str]]] = []
        self.status: int | None = None
        self._numbers = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/oauth/token"

    async def _token(self, request: web.Request) -> web.Response:
        form = parse_qs((await request.read()).decode())
        self.forms.append(form)
        if self.status is not None:
            return web.Response(status=self.status, text="token service down")
        if (
            request.headers.get("Content-Type") != "application/x-www-form-urlencoded"
            or form.get("grant_type") != ["client_credentials"]
            or form.get("client_id") != [self.client_id]
            or form.get("client_secret") != [self.client_secret]
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = f"access-{next(self._numbers)}-x9q"
        self.issued.append(token)
        self.valid.add(token)
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
        )

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/oauth/token", self._token)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        async with asyncio.timeout(10):
            await self._runner.cleanup()


async def set_auth(dsn: str, ep_id: int, *args: str, config: Path | None = None) -> CliResult:
    extra = ["--config", str(config)] if config else []
    return await run_cli("endpoint", "auth", str(ep_id), "--dsn", dsn, *extra, *args)


def signed_ok(secret: str, seen: Seen) -> bool:
    try:
        StandardWebhook(secret).verify(seen.body, dict(seen.headers.items()), json_parse=False)
    except Exception:
        return False
    return True


# -- Basic, Bearer, custom headers ------------------------------------------------------------------


async def test_basic_bearer_and_custom_headers_reach_a_demanding_receiver(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    rules: dict[str, Rule] = {
        # "hookd:pa:ss wörd" in UTF-8, base64 (RFC 7617).
        "/basic": lambda h: h.get("Authorization") == "Basic aG9va2Q6cGE6c3Mgd8O2cmQ=",
        "/bearer": lambda h: h.get("Authorization") == "Bearer tkn-5fd1",
        "/headers": lambda h: h.get("X-Api-Key") == "key-77a0" and h.get("X-Tenant") == "acme",
        "/none": lambda h: "Authorization" not in h,
    }
    creds_file = tmp_path / "creds.json"
    creds_file.write_bytes(orjson.dumps({"headers": {"X-Api-Key": "key-77a0", "X-Tenant": "acme"}}))
    async with Gate(rules) as gate:
        ids, secrets = {}, {}
        for path in rules:
            ids[path], secrets[path] = await add_endpoint(dsn, gate.url + path)
        for path, args in {
            "/basic": ["--basic", "hookd:pa:ss wörd"],
            "/bearer": ["--bearer", "tkn-5fd1"],
            "/headers": ["--credentials-file", str(creds_file)],
        }.items():
            result = await set_auth(dsn, ids[path], *args)
            assert result.returncode == 0, result.describe()
        await publish(db, "order.paid", {"id": 1})
        async with running_daemon(dsn, GUARD_LOOPBACK):
            await wait_until(
                db, "SELECT count(*) = 4 FROM hookd.deliveries WHERE state = 'delivered'"
            )
    assert sorted(s.path for s in gate.seen) == sorted(rules), [
        (s.path, s.status) for s in gate.seen
    ]
    for s in gate.seen:
        assert s.status == 204
        assert signed_ok(secrets[s.path], s), f"{s.path}: credentials must not disturb signing"
        assert s.headers["Content-Type"] == "application/json"


async def test_wrong_credentials_are_attempts_that_fail_with_401(
    dsn: str, db: asyncpg.Connection
) -> None:
    async with Gate({"/bearer": lambda h: h.get("Authorization") == "Bearer right"}) as gate:
        ep_id, _ = await add_endpoint(dsn, gate.url + "/bearer")
        assert (await set_auth(dsn, ep_id, "--bearer", "wrong")).returncode == 0
        await publish(db, "order.paid", {})
        async with running_daemon(dsn, TWO_ATTEMPTS):
            await wait_until(db, "SELECT state = 'failed' FROM hookd.deliveries")
    assert {s.status for s in gate.seen} == {401}
    rows = await db.fetch(f"SELECT status, error FROM {ATTEMPTS} a ORDER BY attempt")
    assert [r["status"] for r in rows] == [401] * 2
    assert all(r["error"] == "HTTP 401" for r in rows)


@pytest.mark.parametrize(
    ("header", "name"),
    [
        # The full list is in tests/unit/test_auth.py; these are the CLI's view of it.
        ("webhook-id: forged", "webhook-id"),
        ("Webhook-Signature: v1,forged", "Webhook-Signature"),
        ("Content-Type: text/plain", "Content-Type"),
        ("Host: internal.example", "Host"),
    ],
)
async def test_cli_refuses_headers_hookd_sets(dsn: str, header: str, name: str) -> None:
    ep_id, _ = await add_endpoint(dsn, "https://receiver.example/hook")
    result = await set_auth(dsn, ep_id, "--header", header)
    assert result.returncode == 2, result.describe()
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hookd: error: "), result.describe()
    assert name in lines[0] and "set by hookd" in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--basic", "no-colon"], "--basic"),
        (["--basic", "a:b", "--bearer", "t"], "only one of basic, bearer and oauth2"),
        (["--header", "X-Bad Name: v"], "not a valid header name"),
        (["--header", "novalue"], "--header"),
        (["--client-cert", "/tmp/x.pem"], "together"),
        (
            [
                "--oauth2-token-url",
                "ftp://auth.example/token",
                "--client-id",
                "i",
                "--client-secret",
                "s",
            ],
            "token_url",
        ),
    ],
)
async def test_cli_refuses_bad_credentials_with_one_line(
    dsn: str, args: list[str], needle: str
) -> None:
    ep_id, _ = await add_endpoint(dsn, "https://receiver.example/hook")
    result = await set_auth(dsn, ep_id, *args)
    assert result.returncode == 2, result.describe()
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hookd: error: ") and needle in lines[0], (
        result.describe()
    )
    creds = await _stored_credentials(dsn, ep_id)
    assert creds is None, "nothing stored after a refusal"


async def test_cli_refuses_plain_http_token_url_unless_allowed(dsn: str, tmp_path: Path) -> None:
    """The OAuth client secret must not travel in clear unless the operator allows http."""
    ep_id, _ = await add_endpoint(dsn, "https://receiver.example/hook")
    args = [
        "--oauth2-token-url",
        "http://auth.example/token",
        "--client-id",
        "i",
        "--client-secret",
        "s",
    ]
    strict = await set_auth(dsn, ep_id, *args)
    assert strict.returncode == 2, strict.describe()
    assert "https" in strict.stderr and "token_url" in strict.stderr, strict.describe()
    allowed = write_config(tmp_path / "hookd.toml", {"security": {"allow_http": True}})
    ok = await set_auth(dsn, ep_id, *args, config=allowed)
    assert ok.returncode == 0, ok.describe()


async def _stored_credentials(dsn: str, ep_id: int) -> str | None:
    conn = await asyncpg.connect(dsn)
    try:
        value: str | None = await conn.fetchval(
            "SELECT credentials FROM hookd.endpoints WHERE id = $1", ep_id
        )
        return value
    finally:
        await conn.close()


# -- OAuth 2.0 client credentials --------------------------------------------------------------


async def test_oauth_token_is_fetched_once_cached_and_refreshed_once_on_401(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    async with TokenServer("hookd-client", "oauth-secret-c0ffee") as tokens:
        rules: dict[str, Rule] = {
            "/oauth": lambda h: h.get("Authorization", "").removeprefix("Bearer ") in tokens.valid,
        }
        async with Gate(rules) as gate:
            ep_id, secret = await add_endpoint(dsn, gate.url + "/oauth")
            cfg = write_config(tmp_path / "hookd.toml", {"security": {"allow_http": True}})
            result = await set_auth(
                dsn, ep_id,
                "--oauth2-token-url", tokens.url, "--client-id", "hookd-client",
                "--client-secret", "oauth-secret-c0ffee", "--scope", "webhooks",
                config=cfg,
            )  # fmt: skip
            assert result.returncode == 0, result.describe()
            async with running_daemon(dsn, GUARD_LOOPBACK):
                for i in range(12):
                    await publish(db, "order.paid", {"i": i})
                await wait_until(
                    db, "SELECT count(*) = 12 FROM hookd.deliveries WHERE state = 'delivered'"
                )
                assert len(tokens.issued) == 1, "one token for many deliveries"
                assert tokens.forms[0]["scope"] == ["webhooks"]
                assert {s.headers["Authorization"] for s in gate.seen} == {
                    f"Bearer {tokens.issued[0]}"
                }

                # The receiver stops accepting the token: one 401, one refresh, one resend.
                tokens.valid.clear()
                before = len(gate.seen)
                await publish(db, "order.paid", {"i": "after revocation"})
                await wait_until(
                    db, "SELECT count(*) = 13 FROM hookd.deliveries WHERE state = 'delivered'"
                )
            after = gate.seen[before:]
            assert [s.status for s in after] == [401, 204]
            assert after[0].headers["Authorization"] == f"Bearer {tokens.issued[0]}"
            assert after[1].headers["Authorization"] == f"Bearer {tokens.issued[1]}"
            assert len(tokens.issued) == 2
            assert after[0].headers["webhook-id"] == after[1].headers["webhook-id"]
            assert all(signed_ok(secret, s) for s in gate.seen)
    last = await db.fetchrow(
        "SELECT a.status, a.attempt FROM hookd.attempts a JOIN hookd.deliveries d"
        " ON d.id = a.delivery_id ORDER BY d.id DESC LIMIT 1"
    )
    assert last is not None and (last["status"], last["attempt"]) == (204, 1)


async def test_oauth_persistent_401_refreshes_once_per_attempt_not_in_a_loop(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    async with (
        TokenServer("cid", "csecret") as tokens,
        Gate({"/deny": lambda h: False}) as gate,
    ):
        ep_id, _ = await add_endpoint(dsn, gate.url + "/deny")
        cfg = write_config(tmp_path / "hookd.toml", {"security": {"allow_http": True}})
        result = await set_auth(
            dsn, ep_id, "--oauth2-token-url", tokens.url, "--client-id", "cid",
            "--client-secret", "csecret", config=cfg,
        )  # fmt: skip
        assert result.returncode == 0, result.describe()
        await publish(db, "order.paid", {})
        async with running_daemon(dsn, TWO_ATTEMPTS):
            await wait_until(db, "SELECT state = 'failed' FROM hookd.deliveries")
    attempts = await db.fetch(f"SELECT status FROM {ATTEMPTS} a ORDER BY attempt")
    assert [r["status"] for r in attempts] == [401] * 2
    # Each attempt: the cached token, a 401, one new token, one resend, another 401.
    assert len(gate.seen) == 2 * len(attempts)
    assert len(tokens.issued) == 1 + len(attempts)


async def test_oauth_token_server_failures_are_recorded_without_secrets(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    async with (
        TokenServer("cid", "the-right-secret") as tokens,
        Gate({"/oauth": lambda h: True}) as gate,
    ):
        cfg = write_config(tmp_path / "hookd.toml", {"security": {"allow_http": True}})
        wrong, _ = await add_endpoint(dsn, gate.url + "/oauth")
        await set_auth(
            dsn, wrong, "--oauth2-token-url", tokens.url, "--client-id", "cid",
            "--client-secret", "a-wrong-secret-ab12", config=cfg,
        )  # fmt: skip
        await publish(db, "order.paid", {})
        async with running_daemon(dsn, TWO_ATTEMPTS):
            await wait_until(db, "SELECT state = 'failed' FROM hookd.deliveries")
        assert gate.seen == [], "no request is sent without a token"
    errors = [r["error"] for r in await db.fetch(f"SELECT error FROM {ATTEMPTS} a")]
    assert errors and all(
        e == "OAuth token request failed: token endpoint answered HTTP 401" for e in errors
    ), errors
    assert not any("a-wrong-secret-ab12" in e for e in errors)


# -- mTLS --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pki:
    ca_bundle: str
    client_cert: str
    client_key: str
    server: ssl.SSLContext


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A private CA; a server certificate for 127.0.0.1 that demands client certificates from
    the same CA; and a client certificate (files, as an operator would give them)."""
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("hookd-client@example")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server)
    ca.configure_trust(server)
    server.verify_mode = ssl.CERT_REQUIRED
    paths = {k: tmp_path / f"{k}.pem" for k in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client.private_key_pem.write_to_path(str(paths["key"]))
    return Pki(str(paths["ca"]), str(paths["cert"]), str(paths["key"]), server)


async def test_mtls_with_client_certificate_and_ca_bundle_is_delivered(
    dsn: str, db: asyncpg.Connection, pki: Pki
) -> None:
    async with Gate({"/mtls": lambda h: True}, ssl_context=pki.server) as gate:
        ep_id, secret = await add_endpoint(dsn, gate.url + "/mtls")
        result = await set_auth(
            dsn, ep_id,
            "--client-cert", pki.client_cert, "--client-key", pki.client_key,
            "--ca-bundle", pki.ca_bundle,
        )  # fmt: skip
        assert result.returncode == 0, result.describe()
        await publish(db, "order.paid", {"tls": True})
        async with running_daemon(dsn, GUARD_LOOPBACK):
            await wait_until(db, "SELECT state = 'delivered' FROM hookd.deliveries")
    (seen,) = gate.seen
    assert seen.status == 204 and signed_ok(secret, seen)
    assert seen.peer_cert is not None, "the server saw hookd's client certificate"
    assert ("email", "hookd-client@example") in seen.peer_cert["subjectAltName"]


async def test_client_certificate_is_not_shared_with_another_endpoint_on_the_same_origin(
    dsn: str, db: asyncpg.Connection, pki: Pki
) -> None:
    """Connections are pooled per origin: one endpoint's mTLS connection must never carry
    another endpoint's requests (that would authenticate them as the first endpoint)."""
    pki.server.verify_mode = ssl.CERT_OPTIONAL
    async with Gate({"/a": lambda h: True, "/b": lambda h: True}, ssl_context=pki.server) as gate:
        with_cert, _ = await add_endpoint(dsn, gate.url + "/a")
        without, _ = await add_endpoint(dsn, gate.url + "/b")
        mtls = ["--client-cert", pki.client_cert, "--client-key", pki.client_key]
        assert (await set_auth(dsn, with_cert, *mtls, "--ca-bundle", pki.ca_bundle)).returncode == 0
        assert (await set_auth(dsn, without, "--ca-bundle", pki.ca_bundle)).returncode == 0
        async with running_daemon(dsn, GUARD_LOOPBACK):
            for i in range(6):
                await publish(db, "order.paid", {"i": i})
            await wait_until(
                db, "SELECT count(*) = 12 FROM hookd.deliveries WHERE state = 'delivered'"
            )
    assert len(gate.for_path("/a")) == len(gate.for_path("/b")) == 6
    assert all(s.peer_cert for s in gate.for_path("/a"))
    assert not any(s.peer_cert for s in gate.for_path("/b")), "a request rode another's mTLS"


@pytest.mark.parametrize(
    ("case", "flags"),
    [
        ("no CA bundle: the private CA is not trusted", ["client_cert", "client_key"]),
        ("no client certificate: the server refuses", ["ca_bundle"]),
    ],
)
async def test_mtls_failures_are_tls_errors_and_never_delivered(
    dsn: str, db: asyncpg.Connection, pki: Pki, case: str, flags: list[str]
) -> None:
    async with Gate({"/mtls": lambda h: True}, ssl_context=pki.server) as gate:
        ep_id, _ = await add_endpoint(dsn, gate.url + "/mtls")
        args: list[str] = []
        for flag in flags:
            args += [f"--{flag.replace('_', '-')}", getattr(pki, flag)]
        assert (await set_auth(dsn, ep_id, *args)).returncode == 0
        await publish(db, "order.paid", {})
        async with running_daemon(dsn, TWO_ATTEMPTS):
            await wait_until(db, "SELECT state = 'failed' FROM hookd.deliveries", timeout_s=15)
        assert gate.seen == [], f"{case}: no HTTP request may get through"
    errors = [r["error"] for r in await db.fetch(f"SELECT error FROM {ATTEMPTS} a")]
    assert len(errors) == 2
    if "ca_bundle" not in flags:
        assert all(
            e.startswith("TLS error") and "CERTIFICATE_VERIFY_FAILED" in e for e in errors
        ), errors
    else:
        # With TLS 1.3 the server checks the client certificate after the client considers the
        # handshake done, so the refusal shows as a TLS error or a reset of the connection.
        assert all(
            e.startswith(("TLS error", "server disconnected", "connection reset"))
            or "Connection reset by peer" in e
            for e in errors
        ), errors
    assert await db.fetchval("SELECT count(*) FROM hookd.deliveries WHERE state = 'delivered'") == 0


async def test_https_certificate_is_verified_even_without_credentials(
    dsn: str, db: asyncpg.Connection, pki: Pki
) -> None:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server)
    async with Gate({"/plain": lambda h: True}, ssl_context=server) as gate:
        await add_endpoint(dsn, gate.url + "/plain")
        await publish(db, "order.paid", {})
        async with running_daemon(dsn, TWO_ATTEMPTS):
            await wait_until(db, "SELECT state = 'failed' FROM hookd.deliveries", timeout_s=15)
        assert gate.seen == []
    errors = [r["error"] for r in await db.fetch(f"SELECT error FROM {ATTEMPTS} a")]
    assert errors and all(e.startswith("TLS error") for e in errors), errors


async def test_certificate_for_another_host_name_is_refused(
    dsn: str, db: asyncpg.Connection, pki: Pki, tmp_path: Path
) -> None:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("receiver.example").configure_cert(server)
    ca_path = tmp_path / "other-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    async with Gate({"/h": lambda h: True}, ssl_context=server) as gate:
        ep_id, _ = await add_endpoint(dsn, gate.url + "/h")
        assert (await set_auth(dsn, ep_id, "--ca-bundle", str(ca_path))).returncode == 0
        await publish(db, "order.paid", {})
        async with running_daemon(dsn, TWO_ATTEMPTS):
            await wait_until(db, "SELECT state = 'failed' FROM hookd.deliveries", timeout_s=15)
        assert gate.seen == []
    errors = [r["error"] for r in await db.fetch(f"SELECT error FROM {ATTEMPTS} a")]
    assert errors and all(e.startswith("TLS error") for e in errors), errors
