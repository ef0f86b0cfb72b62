"""A TCP proxy on loopback that a test can break on purpose: cut every connection, or blackhole them,
or point it elsewhere.

Put it between hookd and PostgreSQL (or a receiver) to produce the failures a real network produces:

- `cut()`: every current connection is reset at once, both sides (SO_LINGER 0, so the TCP peer sees
  an RST, not a FIN). New connections are still accepted.
- `blackhole()`: connections stay open but no byte gets through in either direction, like a TCP
  path that died silently; nobody gets an error. Connections accepted while blackholed are dead too.
- `restore()`: new connections forward normally again; the ones already blackholed stay dead.
- `retarget(upstream)`: connections accepted from now on go to another upstream; the ones already
  open keep theirs (`active_to()` counts them), like a failover that moves a virtual IP or a DNS
  name while old TCP sessions live on. `cut()` ends those too.

The upstream is a TCP (host, port) or a unix socket path (the embedded test Postgres listens on a
unix socket only). Same idea as the proxy asyncpg's own test suite uses to cut connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import struct
from pathlib import Path
from typing import Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_CHUNK_BYTES = 64 * 1024
_LINGER_RST = struct.pack("ii", 1, 0)

Upstream = tuple[str, int] | Path
"""Where a proxy forwards to: a TCP (host, port) or a unix socket path."""


def _upstream(target: tuple[str, int] | str | os.PathLike[str]) -> Upstream:
    return (target[0], int(target[1])) if isinstance(target, tuple) else Path(target)


class _Link:
    """One proxied connection: the client side, the upstream side (and where it leads), and whether
    its path is dead."""

    __slots__ = ("client", "cut", "dead", "target", "upstream")

    def __init__(self, client: asyncio.StreamWriter, target: Upstream, *, dead: bool) -> None:
        self.client = client
        self.target = target
        """The upstream this connection was sent to when it was accepted."""
        self.upstream: asyncio.StreamWriter | None = None
        self.dead = dead
        self.cut = False

    def reset(self) -> None:
        """Close both sides now; TCP peers get an RST."""
        self.cut = True
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                # OSError: already closed, nothing left to reset.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            writer.transport.abort()

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.close()


class TcpProxy:
    """Forwards connections from 127.0.0.1:<port> to `upstream`; an async context manager.

    Args:
        upstream: (host, port) for TCP, or a path (str or Path) for a unix socket; `retarget()`
            changes it for connections accepted afterwards.
        host: where to listen; port 0 lets the OS choose (read `port` after start).
        connect_timeout_s: bound on connecting upstream; on failure the client is reset.
    """

    def __init__(
        self,
        upstream: tuple[str, int] | str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"tests listen on loopback only, not {host!r}")
        self.upstream: Upstream = _upstream(upstream)
        """Where connections accepted from now on are forwarded to."""
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.accepted_total = 0
        """Connections accepted since start (cut and closed ones included)."""
        self._server: asyncio.Server | None = None
        self._blackholed = False
        # Each live connection and the handler task (owned by asyncio's server) that serves it.
        self._links: dict[_Link, asyncio.Task[None]] = {}
        self._accepted = asyncio.Condition()

    @classmethod
    def to_postgres(
        cls, dsn: str, *, host: str = "127.0.0.1", connect_timeout_s: float = 5.0
    ) -> TcpProxy:
        """A proxy to the server a `postgresql://` URI points at (unix socket dir or host:port).

        Only the URI form with a single host is understood; `?host=/dir` means a unix socket.
        """
        parts = urlsplit(dsn)
        query = dict(parse_qsl(parts.query))
        pg_host = query.get("host") or parts.hostname
        pg_port = int(query.get("port") or parts.port or 5432)
        if not pg_host:
            raise ValueError(f"no host in DSN {dsn!r}")
        if "," in pg_host:
            raise ValueError(f"multi-host DSNs are not supported: {dsn!r}")
        upstream: tuple[str, int] | Path
        if pg_host.startswith("/"):
            upstream = Path(pg_host) / f".s.PGSQL.{pg_port}"
        else:
            upstream = (pg_host, pg_port)
        return cls(upstream, host=host, connect_timeout_s=connect_timeout_s)

    def dsn_through(self, base_dsn: str) -> str:
        """`base_dsn` (a `postgresql://` URI) rewritten to reach the same user and db via this proxy."""
        if not self.port:
            raise RuntimeError("proxy has not been started yet")
        parts = urlsplit(base_dsn)
        userinfo, at, _ = parts.netloc.rpartition("@")
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port")]
        host = f"[{self.host}]" if ":" in self.host else self.host
        netloc = f"{userinfo}{at}{host}:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), parts.fragment))

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("proxy already running")
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and reset every connection. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await self.cut()
        async with asyncio.timeout(5):
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- faults ----------------------------------------------------------------------------------

    async def cut(self) -> int:
        """Reset every current connection, both sides; return how many. New ones still work.

        Returns once their sockets are closed, so the peers have been sent their RSTs.
        """
        links = list(self._links.items())
        for link, _ in links:
            link.reset()
        tasks = [task for _, task in links]
        if tasks:
            async with asyncio.timeout(5):
                await asyncio.wait(tasks)
        return len(links)

    def blackhole(self) -> None:
        """Silently drop every byte of current and new connections, in both directions."""
        self._blackholed = True
        for link in self._links:
            link.dead = True

    def restore(self) -> None:
        """Forward new connections normally again; already blackholed ones stay dead."""
        self._blackholed = False

    def retarget(self, upstream: tuple[str, int] | str | os.PathLike[str]) -> None:
        """Send connections accepted from now on to `upstream`; open ones keep their own.

        Takes effect at once: every connection accepted after this call goes to the new upstream
        (the upstream is chosen when a connection is accepted, before anything is awaited).
        """
        self.upstream = _upstream(upstream)

    def active_to(self, upstream: tuple[str, int] | str | os.PathLike[str]) -> int:
        """Open connections (dead ones included) that were sent to `upstream`."""
        target = _upstream(upstream)
        return sum(1 for link in self._links if link.target == target)

    @property
    def active(self) -> int:
        """Connections currently open through the proxy (dead ones included)."""
        return len(self._links)

    async def wait_for_accepted(self, total: int, timeout_s: float = 5.0) -> None:
        """Wait until `accepted_total` reaches `total` (e.g. a client reconnected).

        Raises:
            AssertionError: not reached within `timeout_s`.
        """
        try:
            async with asyncio.timeout(timeout_s), self._accepted:
                await self._accepted.wait_for(lambda: self.accepted_total >= total)
        except TimeoutError:
            raise AssertionError(
                f"proxy accepted {self.accepted_total} connection(s) in {timeout_s}s, "
                f"expected {total}"
            ) from None

    # -- forwarding ------------------------------------------------------------------------------

    @staticmethod
    async def _open_upstream(target: Upstream) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if isinstance(target, tuple):
            return await asyncio.open_connection(*target)
        return await asyncio.open_unix_connection(target)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        # The upstream is fixed here, before any await: retarget() affects only later accepts.
        link = _Link(writer, self.upstream, dead=self._blackholed)
        self._links[link] = task
        self.accepted_total += 1
        async with self._accepted:
            self._accepted.notify_all()
        try:
            if link.dead:
                # A dead path never reaches upstream; swallow what the client sends until it leaves.
                await self._pump(link, reader, None)
                return
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    up_reader, up_writer = await self._open_upstream(link.target)
            except (OSError, TimeoutError):
                link.reset()
                return
            link.upstream = up_writer
            if link.cut:  # cut() ran while we were connecting
                link.reset()
                return
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pump(link, reader, up_writer))
                tg.create_task(self._pump(link, up_reader, writer))
        finally:
            link.close()
            del self._links[link]

    @staticmethod
    async def _pump(
        link: _Link, src: asyncio.StreamReader, dst: asyncio.StreamWriter | None
    ) -> None:
        """Copy src to dst until EOF; a dead link reads and drops. An error resets the whole link."""
        try:
            while data := await src.read(_CHUNK_BYTES):
                if link.dead or dst is None:
                    continue
                if dst.is_closing():
                    link.reset()
                    return
                dst.write(data)
                await dst.drain()
        except OSError:
            link.reset()
            return
        if link.dead or dst is None:
            return  # a dead path carries no FIN either
        # Pass the half-close on; the other direction keeps flowing until its own EOF.
        try:
            if not dst.is_closing() and dst.can_write_eof():
                dst.write_eof()
        except OSError:
            link.reset()
