"""Per-origin HTTP connection pools with concurrency limits and capped response reads.

One aiohttp ClientSession (and so one keep-alive pool) per origin (scheme, host, port): a slow or
dead receiver can only use its own pool's slots. Redirects are never followed (docs/design-notes.md
item 9): a 3xx is returned as it is and the redirect target receives nothing. aiohttp's exceptions
are mapped here to `FailureKind`, so `classify` stays free of aiohttp.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.resolver import DefaultResolver
from aiohttp.tracing import Trace

from hookd.classify import FailureKind
from hookd.config import HttpConfig
from hookd.destinations import DestinationPolicy, DestinationRefused

log = logging.getLogger("hookd.hostpool")


class Origin(NamedTuple):
    """The key of a connection pool (RFC 6454 origin)."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        """The origin of `url`. Raises ValueError for a URL without an http(s) scheme or host."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname.lower(), port)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def authority(self) -> str:
        """`host:port` (an IPv6 host in brackets), as error messages name the receiver."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Response:
    """A received HTTP response: status, Retry-After header and the kept start of the body."""

    status: int
    retry_after: str | None
    body: bytes
    """At most `response_body_max_bytes` bytes."""


class SendFailed(Exception):
    """No HTTP response was received; `kind` says why, the message gives detail.

    The message names what failed: the receiver's `host:port` (the host alone for a failed name
    lookup), and for a timeout which one fired, its value in seconds and the setting it came from.
    """

    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def failure_kind(exc: BaseException) -> FailureKind:
    """Map an exception raised while sending to a FailureKind (the aiohttp ClientError tree).

    Order matters: the DNS and certificate errors are subclasses of ClientConnectorError.
    """
    if isinstance(exc, DestinationRefused) or isinstance(
        getattr(exc, "os_error", None), DestinationRefused
    ):
        return FailureKind.DESTINATION_REFUSED
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return FailureKind.TIMEOUT
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return FailureKind.DNS
    if isinstance(
        exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError | ssl.SSLError
    ):
        return FailureKind.TLS
    if isinstance(exc, aiohttp.ClientConnectorError):
        return FailureKind.CONNECT
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return FailureKind.DISCONNECT
    if isinstance(exc, aiohttp.ClientConnectionResetError | ConnectionResetError):
        return FailureKind.RESET
    if isinstance(exc, aiohttp.InvalidUrlClientError | aiohttp.NonHttpUrlClientError):
        return FailureKind.INVALID
    if isinstance(exc, aiohttp.ClientOSError | OSError):
        return FailureKind.CONNECT
    return FailureKind.OTHER


class GuardedResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver, then refuses hosts with a disallowed address.

    aiohttp connects to exactly the addresses returned here, so the address that was checked is
    the address connected to: no second lookup, and DNS rebinding cannot slip past the check.
    """

    def __init__(self, policy: DestinationPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        self._policy.check_addresses(host, [r["host"] for r in results])
        return results

    async def close(self) -> None:
        await self._inner.close()


class HostPools:
    """Owns one ClientSession per origin; an async context manager that closes them all.

    Limits: `per_host_limit` connections per origin (the connector's limit, so requests beyond it
    wait for a connection inside the attempt's total timeout only after the caller's own slot
    accounting let them through).
    """

    def __init__(
        self,
        cfg: HttpConfig,
        policy: DestinationPolicy | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        """`policy` is the SSRF guard (None: every destination allowed); `resolver` replaces
        aiohttp's default name resolution under the guard (tests use it to script answers)."""
        self._cfg = cfg
        self._policy = policy or DestinationPolicy(enabled=False)
        self._inner_resolver = resolver
        self._sessions: dict[Origin, aiohttp.ClientSession] = {}
        self._fresh: dict[Origin, aiohttp.ClientSession] = {}
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}
        self._refused: dict[Origin, str | None] = {}
        """Per origin: why its host literal is refused by the SSRF guard, or None if allowed."""
        self._retired: list[aiohttp.ClientSession] = []
        """Sessions from before a policy change (see reconfigure); closed with the pools."""

    async def __aenter__(self) -> HostPools:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every session; idempotent."""
        sessions = [*self._sessions.values(), *self._fresh.values(), *self._retired]
        self._sessions, self._fresh, self._retired = {}, {}, []
        for s in sessions:
            await s.close()

    def reconfigure(self, cfg: HttpConfig, policy: DestinationPolicy | None = None) -> None:
        """Apply reloaded settings: timeouts and body cap on next requests (the per-origin request
        limit is the in-flight ledger's, hookd/inflight.py); and `policy` (the SSRF guard of a
        reloaded [security]) when given.

        A new policy applies to the next request: the per-origin decisions are forgotten and the
        sessions are retired (their requests in flight finish; they close with the pools), so no
        pooled connection or cached DNS answer checked under the old policy is used again.
        Existing connection pools keep their size until they are recreated (at restart).
        """
        self._cfg = cfg
        if policy is not None:
            self._policy = policy
            self._refused = {}
            self._retired += [*self._sessions.values(), *self._fresh.values()]
            self._sessions, self._fresh = {}, {}

    def _session(self, origin: Origin) -> aiohttp.ClientSession:
        session = self._sessions.get(origin)
        if session is None:
            connector = _MarkingConnector(
                limit=self._cfg.per_host_limit,
                limit_per_host=0,
                ttl_dns_cache=30,
                keepalive_timeout=30,
                resolver=self._resolver(),
            )
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                headers={"User-Agent": self._cfg.user_agent},
                skip_auto_headers=("Accept-Encoding",),
            )
            self._sessions[origin] = session
        return session

    def _fresh_session(self, origin: Origin) -> aiohttp.ClientSession:
        """A session whose every request opens a new connection (for the one stale-connection retry)."""
        session = self._fresh.get(origin)
        if session is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    force_close=True, limit=self._cfg.per_host_limit, resolver=self._resolver()
                ),
                auto_decompress=False,
                headers={"User-Agent": self._cfg.user_agent},
                skip_auto_headers=("Accept-Encoding",),
            )
            self._fresh[origin] = session
        return session

    def _resolver(self) -> AbstractResolver:
        return GuardedResolver(self._policy, self._inner_resolver)

    async def post(
        self,
        origin: Origin,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect_timeout_s: float | None = None,
        total_timeout_s: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_body_bytes: int | None = None,
        budget_s: float | None = None,
        connect_timeout_setting: str = "http.connect_timeout_s",
        total_timeout_setting: str = "http.total_timeout_s",
    ) -> Response:
        """POST `body` to `url` and return the response; never follows redirects.

        The whole call, the fresh-connection resend and the body read included, ends within the
        total timeout or `budget_s` seconds, whichever is shorter (a timeout past it).
        `connect_timeout_setting` and `total_timeout_setting` name where the timeouts came from
        (the configuration keys by default; the caller names an endpoint's own override), for
        the message of a timeout.

        `ssl_context` replaces the default verifying context (custom CA, client certificate);
        certificates are verified either way. `max_body_bytes` overrides the response cap.

        Reads at most `response_body_max_bytes` of the body; a longer (or endless) body ends the
        read and closes that connection instead of returning it to the pool. If the server drops
        the connection before any response (typically a stale keep-alive connection it had
        already closed), the request is sent once more at once on a fresh connection.

        Raises:
            SendFailed: no response (timeout, DNS, connect, TLS, reset, disconnect).
        """
        # The literal check depends only on the host and the policy: decide once per origin.
        refused = self._refused.get(origin, "")
        if refused == "":
            try:
                self._policy.check_host(origin.host)
                refused = None
            except DestinationRefused as exc:
                refused = str(exc)
            self._refused[origin] = refused
        if refused is not None:
            raise SendFailed(FailureKind.DESTINATION_REFUSED, refused)
        cfg = self._cfg
        key = (total_timeout_s or cfg.total_timeout_s, connect_timeout_s or cfg.connect_timeout_s)
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(total=key[0], sock_connect=key[1])
        cap = max_body_bytes or cfg.response_body_max_bytes
        tls: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        # One bound for the whole attempt, the resend included: the total timeout, or the
        # caller's budget (what is left of the lease) if that is shorter.
        bound_s = key[0]
        if budget_s is not None and budget_s < bound_s:
            bound_s = max(0.0, budget_s)
            timeout = aiohttp.ClientTimeout(total=bound_s, sock_connect=min(key[1], bound_s))
        loop = asyncio.get_running_loop()
        end = loop.time() + bound_s
        try:
            try:
                return await self._send(
                    self._session(origin), url, body, headers, timeout, tls, cap
                )
            except _NoResponse as stale:
                left_s = end - loop.time()
                if stale.opened or left_s <= 0:
                    raise
                log.debug(
                    "no response on a pooled connection to %s (%s); retrying fresh",
                    origin,
                    stale.__cause__,
                )
                rest = aiohttp.ClientTimeout(total=left_s, sock_connect=min(key[1], left_s))
                return await self._send(
                    self._fresh_session(origin), url, body, headers, rest, tls, cap
                )
        except _NoResponse as exc:
            cause = exc.__cause__
            assert cause is not None
            raise SendFailed(failure_kind(cause), _detail(cause, origin)) from cause
        except (aiohttp.ClientError, OSError, TimeoutError, ssl.SSLError) as exc:
            kind = failure_kind(exc)
            if kind is FailureKind.DESTINATION_REFUSED:
                raise SendFailed(kind, str(getattr(exc, "os_error", None) or exc)) from None
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                # sock_connect was min(connect timeout, bound): say which of the two it was.
                if bound_s < key[1]:
                    detail = f"no connection to {origin.authority} within {bound_s:g} s" + _LEASE
                else:
                    detail = (
                        f"no connection to {origin.authority} within {key[1]:g} s"
                        f" ({connect_timeout_setting})"
                    )
            elif kind is FailureKind.TIMEOUT:
                source = _LEASE if bound_s < key[0] else f" ({total_timeout_setting})"
                detail = (
                    f"no complete response from {origin.authority} within {bound_s:g} s{source}"
                )
            else:
                detail = _detail(exc, origin)
            raise SendFailed(kind, detail) from exc

    async def _send(
        self,
        session: aiohttp.ClientSession,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        client_timeout: aiohttp.ClientTimeout,
        tls: ssl.SSLContext | bool,
        cap: int,
    ) -> Response:
        opened = [False]
        _OPENED.set(opened)
        try:
            cm = session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=client_timeout,
                ssl=tls,
            )
            resp = await cm.__aenter__()
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientConnectionResetError,
            aiohttp.ClientOSError,
        ) as exc:
            # ClientOSError here is "cannot write the request": a pooled connection the server
            # closed just as it was taken. Only a reused connection gets the fresh resend.
            if isinstance(exc, aiohttp.ClientConnectorError):
                raise
            raise _NoResponse(opened[0]) from exc
        try:
            kept = bytearray()
            while len(kept) < cap:
                chunk = await resp.content.read(cap - len(kept))
                if not chunk:
                    break
                kept += chunk
            if not resp.content.at_eof():
                # Unread body: do not hand this connection back to the pool.
                resp.close()
            return Response(resp.status, resp.headers.get("Retry-After"), bytes(kept))
        finally:
            await cm.__aexit__(None, None, None)


class _NoResponse(Exception):
    """The connection was dropped before any response; __cause__ holds aiohttp's error.

    `opened` tells whether this request opened its connection. If it did not, the request went out
    on a pooled keep-alive connection (which the server may have closed while it sat idle): only
    then is one immediate resend warranted.
    """

    def __init__(self, opened: bool) -> None:
        super().__init__()
        self.opened = opened


_OPENED: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar(
    "hookd_connection_opened", default=None
)
"""Per request (in the sending task's context): set to [True] when the connector opens a new
connection for it. Cheaper than an aiohttp trace hook on every request."""


class _MarkingConnector(aiohttp.TCPConnector):
    """A TCPConnector that tells the request in progress when it opened a new connection.

    Relies on aiohttp calling `_create_connection` (in the requesting task) for every new
    connection and never for a pooled one; the keep-alive tests in
    tests/integration/test_engine_http.py fail if that changes.
    """

    async def _create_connection(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109  (aiohttp's own signature)
    ) -> ResponseHandler:
        mark = _OPENED.get()
        if mark is not None:
            mark[0] = True
        return await super()._create_connection(req, traces, timeout)


_LEASE = " (the rest of the delivery's lease, daemon.lease_s)"
"""Why an attempt's bound was shorter than its total timeout: the lease was about to end."""


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, TimeoutError) or not text:
        return type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _os_reason(exc: BaseException | None) -> str:
    """The operating system's words for a socket error ("Connection refused"), else its text."""
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        return os.strerror(exc.errno)
    return _describe(exc) if exc is not None else "unknown error"


def _detail(exc: BaseException, origin: Origin) -> str:
    """The message of a failure without a response (not a timeout), naming the receiver.

    Follows aiohttp's ClientError tree (subclasses before their bases) and leaves out aiohttp's
    internals (connection keys, "ssl:default").
    """
    where = origin.authority
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {origin.host}: {_os_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate of {where} not accepted: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"TLS handshake with {where} failed: {exc.os_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {where}: {_os_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"{where} closed the connection without a response"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"{where} sent an incomplete response body ({exc})"
    if isinstance(exc, aiohttp.ClientConnectionResetError | ConnectionResetError):
        return f"{where} reset the connection"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {where} failed: {exc.reason or exc}"
    if isinstance(exc, OSError):
        return f"connection to {where} failed: {_os_reason(exc)}"
    return f"{where}: {_describe(exc)}"
