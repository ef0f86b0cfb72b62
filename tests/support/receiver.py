"""A real webhook receiver on loopback that records every request it gets.

`Receiver` is an aiohttp server bound to 127.0.0.1 (or ::1) on a port the OS picks. Each path can be
scripted with a list of behaviours consumed in order (the last repeats); the default answers 204.
Requests to a path with a secret are verified with the `standardwebhooks` reference package, so a
signature hookd gets wrong fails here the way it would fail at a real receiver.

Waiting is driven by an `asyncio.Condition` notified on every request: no polling, and a timeout
raises an AssertionError that lists what did arrive.

A request is recorded *before* its response is written, so "the receiver saw N requests" does not
mean the sender has processed N responses yet.

Concurrency is measured too: `in_flight` counts requests whose handler is still running (a HANG, a
slow answer, a body still being written) and `peak_in_flight` the most at any moment, per receiver
and per path; extra `ConcurrencyGauge`s shared between receivers measure several origins together.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from standardwebhooks.webhooks import Webhook

HANG: Literal["hang"] = "hang"
"""Accept the request and never answer (until the client gives up or the receiver stops)."""
DROP: Literal["drop"] = "drop"
"""Read the request, then abort the connection without any response."""
DRIP: Literal["drip"] = "drip"
"""Answer 200 with a 3,600-byte Content-Length, then send the body one byte per second."""
HUGE: Literal["huge"] = "huge"
"""Answer 200 with an 8 MiB body (Content-Length set); ("huge", status) for another status."""
ENDLESS: Literal["endless"] = "endless"
"""Answer 200 with a chunked body that never ends (until the client closes the connection)."""
CLOSE: Literal["close"] = "close"
"""Answer 204 without a `Connection: close` header, then close the connection at once: the client
may have put it back in its keep-alive pool, and finds it dead when it uses it again."""
SLOW: Literal["slow"] = "slow"
"""("slow", seconds) answers 204 after `seconds`; ("slow", seconds, status) another status."""
REDIRECT: Literal["redirect"] = "redirect"
"""("redirect", status, location): a 3xx answer with a Location header."""
BODY: Literal["body"] = "body"
"""("body", status, text): an answer with a text/plain body (what the attempt log keeps)."""

HUGE_BODY_BYTES = 8 * 1024 * 1024
DRIP_BODY_BYTES = 3600

Behaviour = (
    int
    | Literal["hang", "drop", "drip", "huge", "endless", "close"]
    | tuple[int, Mapping[str, str]]
    | tuple[Literal["huge"], int]
    | tuple[Literal["slow"], float]
    | tuple[Literal["slow"], float, int]
    | tuple[Literal["redirect"], int, str]
    | tuple[Literal["body"], int, str]
)
"""A status code, one of the named behaviours above, or (status, extra response headers) e.g.
(429, {"Retry-After": "2"})."""

DEFAULT_BEHAVIOUR: Behaviour = 204
_MAX_BODY_BYTES = 8 * 1024 * 1024


def status_of(behaviour: Behaviour) -> int | None:
    """The status a behaviour answers with, or None for HANG / DROP."""
    if isinstance(behaviour, int):
        return behaviour
    if isinstance(behaviour, tuple):
        head = behaviour[0]
        if isinstance(head, int):
            return head
        if head == HUGE:
            return int(behaviour[1])
        if head == SLOW:
            return int(behaviour[2]) if len(behaviour) > 2 else 204
        if head in (REDIRECT, BODY):
            return int(behaviour[1])
        raise ValueError(f"unknown behaviour {behaviour!r}")
    return {HANG: None, DROP: None, DRIP: 200, HUGE: 200, ENDLESS: 200, CLOSE: 204}[behaviour]


class ConcurrencyGauge:
    """Requests being handled now and the most at once since the last `reset()`."""

    __slots__ = ("current", "peak")

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0

    def enter(self) -> None:
        self.current += 1
        self.peak = max(self.peak, self.current)

    def leave(self) -> None:
        self.current -= 1

    def reset(self) -> None:
        """Start a new measurement: the peak becomes what is open now."""
        self.peak = self.current


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the receiver saw it.

    `verified` is None when no secret is configured for the path, else whether the Standard Webhooks
    signature checked out; `verify_error` says why not. `json` is None when the body is not JSON.
    `received_loop_s` is the receiving loop's `loop.time()`; `received_wall_s` is `time.time()`.
    """

    seq: int
    method: str
    path: str
    query_string: str
    headers: CIMultiDictProxy[str]
    body: bytes
    json: Any
    webhook_id: str | None
    received_loop_s: float
    received_wall_s: float
    verified: bool | None
    verify_error: str | None
    behaviour: Behaviour

    @property
    def status(self) -> int | None:
        """The status the receiver answered with, or None for HANG / DROP."""
        return status_of(self.behaviour)

    def describe(self) -> str:
        """One line for failure messages."""
        return (
            f"#{self.seq} {self.method} {self.path} webhook-id={self.webhook_id} "
            f"verified={self.verified} -> {self.behaviour!r}"
        )


class Receiver:
    """A recording HTTP server on loopback; an async context manager (start on enter, stop on exit).

    `stop()` and `start()` may be called again; after the first start the port is kept, so a test
    can simulate an outage and recovery of the same URL. Records survive a restart.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        secrets: Mapping[str, str] | None = None,
        default: Behaviour = DEFAULT_BEHAVIOUR,
        gauges: Iterable[ConcurrencyGauge] = (),
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"tests listen on loopback only, not {host!r}")
        self.host = host
        self.port = port
        self.secrets: dict[str, str] = dict(secrets or {})
        """Path -> `whsec_...` secret; requests to these paths are verified."""
        self.default = default
        self._scripts: dict[str, list[Behaviour]] = {}
        self._requests: list[RecordedRequest] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        # Set when stopping, so HANG handlers let go instead of holding shutdown for its timeout.
        self._release_hung = asyncio.Event()
        self.gauge = ConcurrencyGauge()
        """Requests to any path being handled now, and the peak."""
        self._path_gauges: dict[str, ConcurrencyGauge] = {}
        self._shared_gauges = tuple(gauges)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (again). The first start binds port 0 unless a port was given, then keeps it."""
        if self._runner is not None:
            raise RuntimeError("receiver already running")
        self._release_hung = asyncio.Event()
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that gives up on a HANG request frees its handler at once.
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=2.0,
        )
        await runner.setup()
        try:
            # reuse_address so a restart can bind the same port while old sockets sit in TIME_WAIT.
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening and close every connection (idle keep-alives included). Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._release_hung.set()
        async with asyncio.timeout(10):
            await runner.cleanup()

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- addresses -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. http://127.0.0.1:41234."""
        if not self.port:
            raise RuntimeError("receiver has not been started yet")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url_for(self, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        return self.url + path

    # -- behaviour -------------------------------------------------------------------------------

    def script(self, path: str, behaviours: Iterable[Behaviour]) -> None:
        """Answer the next requests to `path` with `behaviours` in order; the last one repeats."""
        items = list(behaviours)
        if not items:
            raise ValueError("script needs at least one behaviour")
        self._scripts[path] = items

    def _next_behaviour(self, path: str) -> Behaviour:
        items = self._scripts.get(path)
        if not items:
            return self.default
        return items.pop(0) if len(items) > 1 else items[0]

    # -- records ---------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self._requests)

    @property
    def count(self) -> int:
        return len(self._requests)

    def requests_for(self, path: str) -> list[RecordedRequest]:
        return [r for r in self._requests if r.path == path]

    def ids_for(self, path: str) -> list[str | None]:
        """The webhook-id of each request to `path`, in arrival order (retries repeat an id)."""
        return [r.webhook_id for r in self._requests if r.path == path]

    def clear(self) -> None:
        """Forget the records (scripts and secrets stay)."""
        self._requests.clear()

    @property
    def in_flight(self) -> int:
        """Requests whose handler is running now (answer not yet fully written)."""
        return self.gauge.current

    @property
    def peak_in_flight(self) -> int:
        """The most requests handled at once since start or `reset_peaks()`."""
        return self.gauge.peak

    def peak_for(self, path: str) -> int:
        """The most requests to `path` handled at once since start or `reset_peaks()`."""
        gauge = self._path_gauges.get(path)
        return gauge.peak if gauge is not None else 0

    def reset_peaks(self) -> None:
        """Start new peak measurements (this receiver's own gauges, not shared ones)."""
        self.gauge.reset()
        for gauge in self._path_gauges.values():
            gauge.reset()

    async def wait_for(
        self,
        what: int | Callable[[Receiver], bool],
        timeout_s: float = 5.0,
        *,
        path: str | None = None,
    ) -> list[RecordedRequest]:
        """Wait until `what` holds, and return the records (those for `path` when given).

        `what` is a request count (at least that many, for `path` if given) or a predicate called
        with this receiver after every request.

        Raises:
            AssertionError: not satisfied within `timeout_s`; the message lists what arrived.
        """
        if isinstance(what, int):
            want = what

            def satisfied() -> bool:
                return len(self.requests_for(path) if path else self._requests) >= want

            description = f"{want} request(s)" + (f" to {path}" if path else "")
        else:
            predicate = what

            def satisfied() -> bool:
                return predicate(self)

            description = f"predicate {getattr(what, '__name__', what)!r}"
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(satisfied)
        except TimeoutError:
            raise AssertionError(
                f"receiver timed out after {timeout_s}s waiting for {description}; "
                f"{self._summary()}"
            ) from None
        return self.requests_for(path) if path else self.requests

    def _summary(self, limit: int = 50) -> str:
        lines = [f"received {len(self._requests)} request(s)"]
        lines += [f"  {r.describe()}" for r in self._requests[-limit:]]
        if len(self._requests) > limit:
            lines.insert(1, f"  ... (showing the last {limit})")
        return "\n".join(lines)

    # -- the handler -----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        gauges = (
            self.gauge,
            self._path_gauges.setdefault(request.path, ConcurrencyGauge()),
            *self._shared_gauges,
        )
        for gauge in gauges:
            gauge.enter()
        try:
            return await self._respond(request)
        finally:
            for gauge in gauges:
                gauge.leave()
            # Lets wait_for predicates on in_flight see the change. Acquiring the condition's
            # lock does not suspend here (nobody holds it across an await), so this runs even
            # while the handler is being cancelled.
            async with self._changed:
                self._changed.notify_all()

    async def _respond(self, request: web.Request) -> web.StreamResponse:
        loop_s = asyncio.get_running_loop().time()
        wall_s = time.time()
        body = await request.read()
        behaviour = self._next_behaviour(request.path)
        verified, verify_error = self._verify(request.path, request.headers, body)
        try:
            parsed: Any = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        record = RecordedRequest(
            seq=len(self._requests),
            method=request.method,
            path=request.path,
            query_string=request.query_string,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body,
            json=parsed,
            webhook_id=request.headers.get("webhook-id"),
            received_loop_s=loop_s,
            received_wall_s=wall_s,
            verified=verified,
            verify_error=verify_error,
            behaviour=behaviour,
        )
        self._requests.append(record)
        async with self._changed:
            self._changed.notify_all()

        if behaviour == HANG:
            await self._release_hung.wait()
            behaviour = DROP
        if behaviour == DROP:
            if request.transport is not None:
                request.transport.abort()
            # aiohttp ignores a response it cannot write to a closed transport.
            return web.Response(status=499)
        if behaviour == DRIP:
            return await self._drip(request)
        if behaviour == ENDLESS:
            return await self._endless(request)
        if behaviour == HUGE:
            return web.Response(status=200, body=b"x" * HUGE_BODY_BYTES)
        if behaviour == CLOSE:
            return await self._answer_then_close(request)
        if isinstance(behaviour, tuple):
            head = behaviour[0]
            if head == SLOW:
                await self._pause(float(behaviour[1]))
                return web.Response(status=status_of(behaviour))
            if head == HUGE:
                return web.Response(status=int(behaviour[1]), body=b"x" * HUGE_BODY_BYTES)
            if head == REDIRECT:
                _, status, location = behaviour
                return web.Response(status=int(status), headers={"Location": str(location)})
            if head == BODY:
                _, status, text = behaviour
                return web.Response(status=int(status), text=str(text))
            status, headers = behaviour
            return web.Response(status=int(status), headers=dict(headers))
        assert isinstance(behaviour, int)
        return web.Response(status=behaviour)

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds` (the scripted behaviour), or less if the receiver stops meanwhile."""
        try:
            async with asyncio.timeout(seconds):
                await self._release_hung.wait()
        except TimeoutError:
            pass

    async def _drip(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        resp.content_length = DRIP_BODY_BYTES
        await resp.prepare(request)
        try:
            for _ in range(DRIP_BODY_BYTES):
                await resp.write(b"x")
                await self._pause(1.0)
                if self._release_hung.is_set():
                    break
        except ConnectionResetError:
            pass  # the client gave up (aiohttp raises a subclass for a closing transport)
        return resp

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b"x" * 65536
        try:
            while not self._release_hung.is_set():
                await resp.write(chunk)
                await asyncio.sleep(0)  # a fast reader never makes write() wait: let others run
        except ConnectionResetError:
            pass  # the client hung up: the end of an endless body
        return resp

    async def _answer_then_close(self, request: web.Request) -> web.StreamResponse:
        resp = web.Response(status=204)
        await resp.prepare(request)
        await resp.write_eof()
        if request.transport is not None:
            request.transport.close()  # after the buffered response is flushed
        return resp

    def _verify(
        self, path: str, headers: CIMultiDictProxy[str], body: bytes
    ) -> tuple[bool | None, str | None]:
        secret = self.secrets.get(path)
        if secret is None:
            return None, None
        try:
            # json_parse=False: a signature is over bytes, whatever they hold.
            Webhook(secret).verify(body, dict(headers.items()), json_parse=False)
        # The reference verifier raises more than WebhookVerificationError on bad input (ValueError
        # for a signature entry without a comma, binascii.Error for bad base64, UnicodeDecodeError
        # for a non-UTF-8 body); every one of them means "would be rejected".
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, None
