"""What a failed attempt says: which timeout fired (and its setting), which host could not be reached.

Real receivers on loopback play the failures: a closed port, a listener whose accept queue is full
(so a connection attempt is never answered: a connect timeout), a receiver that accepts the request
and never answers (a total timeout), one that hangs up without answering, and a name the system
resolver refuses. The attempt log and the delivery's last error must carry the same text.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from hookd.classify import FailureKind
from hookd.config import HttpConfig
from hookd.hostpool import HostPools, Origin, SendFailed

from support.daemon import add_endpoint, publish, running_daemon, wait_until
from support.receiver import DROP, HANG, Receiver

SETTINGS: dict[str, dict[str, Any]] = {
    "http": {"connect_timeout_s": 1.0, "total_timeout_s": 2.0},
    # One attempt each: the test reads the dead letter's last error and its one attempt row.
    "retry": {"schedule_s": [0.0], "max_attempts": 1, "jitter": 0.0},
}


def closed_port() -> int:
    """A loopback port nothing listens on (connecting gets a RST)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def unanswered_listener() -> Iterator[int]:
    """A loopback port whose listener never accepts and whose accept queue is full.

    Linux drops a SYN to a listener with a full accept queue, so a further connection attempt
    gets no answer at all until the client gives up: a connect timeout, on loopback.
    """
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        for _ in range(2):  # a backlog of 0 still queues one; the second waits in SYN-SENT
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for s in (*fillers, listener):
            s.close()


async def last_errors(db: asyncpg.Connection) -> dict[int, tuple[str, list[str]]]:
    """Per endpoint: (the delivery's last error, its attempt rows' errors)."""
    rows = await db.fetch(
        "SELECT d.endpoint_id, d.last_error, array_agg(a.error ORDER BY a.attempt) AS errors"
        " FROM hookd.deliveries d JOIN hookd.attempts a ON a.delivery_id = d.id"
        " GROUP BY d.endpoint_id, d.last_error"
    )
    return {r["endpoint_id"]: (r["last_error"], list(r["errors"])) for r in rows}


async def test_attempt_errors_name_the_timeout_its_setting_and_the_host(
    dsn: str, db: asyncpg.Connection
) -> None:
    refused_port = closed_port()
    with unanswered_listener() as silent_port:
        async with Receiver() as rx:
            rx.script("/hang", [HANG])
            rx.script("/drop", [DROP])
            where = f"127.0.0.1:{rx.port}"
            ep: dict[str, int] = {}
            ep["refused"], _ = await add_endpoint(dsn, f"http://127.0.0.1:{refused_port}/x")
            ep["connect"], _ = await add_endpoint(dsn, f"http://127.0.0.1:{silent_port}/x")
            ep["connect override"], _ = await add_endpoint(dsn, f"http://127.0.0.1:{silent_port}/y")
            ep["total"], _ = await add_endpoint(dsn, rx.url_for("/hang"))
            ep["total override"], _ = await add_endpoint(dsn, rx.url_for("/hang"))
            ep["drop"], _ = await add_endpoint(dsn, rx.url_for("/drop"))
            for name, settings in (
                ("connect override", {"connect_timeout_s": 0.5}),
                ("total override", {"total_timeout_s": 1.5}),
            ):
                await db.execute(
                    "UPDATE hookd.endpoints SET settings = $2::jsonb WHERE id = $1",
                    ep[name],
                    orjson.dumps(settings).decode(),
                )
            await publish(db, "order.paid", {"id": 1})
            async with running_daemon(dsn, SETTINGS):
                await wait_until(
                    db,
                    "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'failed'",
                    len(ep),
                    timeout_s=20,
                )
    expected = {
        "refused": "connection refused or unreachable: cannot connect to "
        f"127.0.0.1:{refused_port}: Connection refused",
        "connect": f"timeout: no connection to 127.0.0.1:{silent_port} within 1 s"
        " (http.connect_timeout_s)",
        "connect override": f"timeout: no connection to 127.0.0.1:{silent_port} within 0.5 s"
        f" (endpoint {ep['connect override']} setting connect_timeout_s)",
        "total": f"timeout: no complete response from {where} within 2 s (http.total_timeout_s)",
        "total override": f"timeout: no complete response from {where} within 1.5 s"
        f" (endpoint {ep['total override']} setting total_timeout_s)",
        "drop": f"server disconnected: {where} closed the connection without a response",
    }
    found = await last_errors(db)
    for name, text in expected.items():
        last, attempts = found[ep[name]]
        assert (last, attempts) == (text, [text]), name


class NumericOnlyResolver(AbstractResolver):
    """The system resolver (getaddrinfo) restricted to numeric hosts: any name is refused by the
    C library itself, with its real error, and no DNS query leaves the machine."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        infos = socket.getaddrinfo(
            host, port, family, socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
        )
        return [
            ResolveResult(
                hostname=host,
                host=str(sockaddr[0]),
                port=int(sockaddr[1]),
                family=fam,
                proto=proto,
                flags=socket.AI_NUMERICHOST,
            )
            for fam, _, proto, _, sockaddr in infos
        ]

    async def close(self) -> None:
        pass


async def test_a_name_that_does_not_resolve_is_named() -> None:
    url = "http://hooks.example.invalid:8080/x"
    async with HostPools(HttpConfig(), resolver=NumericOnlyResolver()) as pools:
        with pytest.raises(SendFailed) as info:
            await pools.post(Origin.of(url), url, b"{}", {})
    assert info.value.kind is FailureKind.DNS
    with pytest.raises(socket.gaierror) as direct:
        socket.getaddrinfo("hooks.example.invalid", 8080, flags=socket.AI_NUMERICHOST)
    assert str(info.value) == f"cannot resolve hooks.example.invalid: {direct.value.strerror}"


async def test_a_timeout_cut_short_by_the_lease_says_so() -> None:
    async with Receiver() as rx:
        rx.script("/hang", [HANG])
        url = rx.url_for("/hang")
        cfg = HttpConfig(connect_timeout_s=1.0, total_timeout_s=5.0)
        async with HostPools(cfg) as pools:
            with pytest.raises(SendFailed) as info:
                await pools.post(Origin.of(url), url, b"{}", {}, budget_s=0.5)
    assert info.value.kind is FailureKind.TIMEOUT
    assert str(info.value) == (
        f"no complete response from 127.0.0.1:{rx.port} within 0.5 s"
        " (the rest of the delivery's lease, daemon.lease_s)"
    )
