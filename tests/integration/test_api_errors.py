"""The operator API through HTTP, against a real daemon: problems, and the daemon's side.

Problem details (RFC 9457) that name the bad field or parameter, and 400, 404, 405, 413 and 415;
start-up errors that name the api setting, the API off without a tokens file, 503 with
Retry-After while the database is away, and no answers once the daemon stops.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import pytest

from hookd.daemon import Daemon
from hookd.errors import ConfigError
from hookd.openapi import MAX_BODY_BYTES

from support.api import OPERATOR, api_daemon
from support.daemon import running_daemon
from support.tcpproxy import TcpProxy

# -- problems ---------------------------------------------------------------------------------------


async def test_bad_requests_get_problem_details_naming_the_field(dsn: str, tmp_path: Path) -> None:
    async with api_daemon(dsn, tmp_path) as (_, c):
        ops = c[OPERATOR]
        errors = (
            await ops.post(
                "/v1/endpoints",
                {
                    "url": "http://127.0.0.1:9/x",
                    "event_types": ["bad..type"],
                    "settings": {"total_timeout_s": 0, "nope": 1},
                    "colour": "blue",
                },
            )
        ).field_errors()
        assert set(errors) == {
            "/event_types/0",
            "/settings/total_timeout_s",
            "/settings/nope",
            "/colour",
        }
        assert "unknown field" in errors["/colour"] and "url" in errors["/colour"]
        assert (await ops.post("/v1/endpoints", {})).field_errors() == {"/url": "required"}
        scheme = (await ops.post("/v1/endpoints", {"url": "ftp://example.com/"})).field_errors()
        assert "/url" in scheme
        # Query parameters are named as parameters; a time without a zone is refused.
        naive = (await ops.get("/v1/deliveries", since="2024-05-01T12:00:00")).field_errors()
        assert "zone" in naive["since"]
        assert "endpoint_id" in (await ops.get("/v1/deliveries", endpoint_id="x")).field_errors()
        assert "state" in (await ops.get("/v1/deliveries", state="lost")).field_errors()
        unknown = (await ops.get("/v1/deliveries", endpoint="1")).field_errors()
        assert "endpoint_id" in unknown["endpoint"]
        assert "id" in (await ops.get("/v1/endpoints/abc")).field_errors()
        assert "id" in (await ops.get(f"/v1/endpoints/{2**63}")).field_errors()

        malformed = await ops.call(
            "POST", "/v1/endpoints", data=b'{"url": ', headers={"Content-Type": "application/json"}
        )
        assert "JSON" in malformed.problem(400)["detail"]
        form = await ops.call(
            "POST", "/v1/endpoints", data=b"url=x", headers={"Content-Type": "text/plain"}
        )
        assert "application/json" in form.problem(415)["detail"]
        huge = await ops.post("/v1/endpoints", {"url": "x" * (MAX_BODY_BYTES + 1)})
        huge.problem(413)
        (await ops.get("/v1/nope")).problem(404)
        (await ops.get("/elsewhere")).problem(404)
        wrong = await ops.call("PUT", "/v1/endpoints")
        wrong.problem(405)
        assert set(wrong.headers["Allow"].split(",")) >= {"GET", "POST"}


# -- the daemon's side --------------------------------------------------------------------------------


async def test_daemon_start_errors_name_the_api_setting(dsn: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-file")
    with pytest.raises(ConfigError, match=r"^api\.tokens_file: cannot read .*no-such-file"):
        async with running_daemon(dsn, {"api": {"port": 0, "tokens_file": missing}}):
            pass
    malformed = tmp_path / "bad-tokens"
    malformed.write_text("ops not-a-hash\n")
    with pytest.raises(ConfigError, match=r"bad-tokens:1: expected"):
        async with running_daemon(dsn, {"api": {"port": 0, "tokens_file": str(malformed)}}):
            pass
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "t").write_text("")
        with pytest.raises(ConfigError, match=rf"^api\.port: cannot listen on 127\.0\.0\.1:{port}"):
            async with running_daemon(
                dsn, {"api": {"port": port, "tokens_file": str(tmp_path / "t")}}
            ):
                pass


async def test_without_a_tokens_file_the_api_is_off(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="hookd"):
        async with running_daemon(dsn) as daemon:
            assert isinstance(daemon, Daemon) and daemon.api is None
    off = [r for r in caplog.records if "operator API off" in r.getMessage()]
    assert len(off) == 1, [r.getMessage() for r in caplog.records]


async def test_the_api_answers_503_with_retry_after_while_the_database_is_away(
    dsn: str, tmp_path: Path
) -> None:
    with socket.socket() as closed:  # bound, never listening: connecting to it is refused
        closed.bind(("127.0.0.1", 0))
        async with TcpProxy.to_postgres(dsn) as proxy:
            database = proxy.upstream
            through = proxy.dsn_through(dsn)
            # The LISTEN connection goes direct: only the pool the API uses loses its database.
            overrides = {"database": {"listen_dsn": dsn, "connect_timeout_s": 1.0}}
            async with api_daemon(through, tmp_path, overrides=overrides) as (_, c):
                ops = c[OPERATOR]
                assert (await ops.get("/v1/endpoints")).ok()["data"] == []
                proxy.retarget(closed.getsockname())
                await proxy.cut()
                away = await ops.get("/v1/endpoints")
                assert "database" in away.problem(503)["detail"]
                assert away.headers["Retry-After"].isdigit()
                proxy.retarget(database)
                async with asyncio.timeout(10):
                    while True:  # the pool reconnects on its next use; no signal to wait on
                        if (await ops.get("/v1/endpoints")).status == 200:
                            break
                        await asyncio.sleep(0.1)


async def test_the_api_stops_answering_when_the_daemon_stops(dsn: str, tmp_path: Path) -> None:
    async with api_daemon(dsn, tmp_path) as (daemon, c):
        base = c[OPERATOR].base
        assert (await c[OPERATOR].get("/v1/endpoints")).ok()["data"] == []
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(base + "/openapi.json")
    assert daemon.api is not None
