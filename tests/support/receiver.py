"""A real webhook receiver on loopback that records every request it gets.

`Receiver` is an aiohttp server bound to 127.0.0.1 (or ::1) on a port the OS picks. Each path can be
scripted with a list of behaviours consumed in order (the last repeats); the default answers 204.
Requests to a path with a secret are verified with the `standardwebhooks` reference package, so a
signature hookd gets wrong fails here the way it would fail at a real receiver.

Waiting is driven by an `asyncio.Condition` notified on every request: no polling, and a timeout
raises an AssertionError that lists what did arrive.

A request is recorded *before* its response is written, so "the receiver saw N requests" does not
mean the sender has processed N responses yet.
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

Behaviour = int | Literal["hang", "drop"] | tuple[int, Mapping[str, str]]
"""A status code, HANG, DROP, or (status, extra response headers) e.g. (429, {"Retry-After": "2"})."""

DEFAULT_BEHAVIOUR: Behaviour = 204
_MAX_BODY_BYTES = 8 * 1024 * 1024


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
        if isinstance(self.behaviour, tuple):
            return self.behaviour[0]
        return self.behaviour if isinstance(self.behaviour, int) else None

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
        if isinstance(behaviour, tuple):
            status, headers = behaviour
            return web.Response(status=status, headers=dict(headers))
        assert isinstance(behaviour, int)
        return web.Response(status=behaviour)

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
