"""A real daemon serving the operator API, with tokens in a file, and a small client for it.

`api_daemon` writes a tokens file (an operator token and one token per tenant in `tenants`),
starts a daemon with `[api] port = 0` (plain http and loopback receivers allowed), and yields it
with one `ApiClient` per token name. Replies are parsed JSON; `problem()` checks the RFC 9457
shape on the way. The helpers the API tests share create an endpoint (checking its Location),
list every delivery across pages, and wait for a delivery to reach a state.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from hookd import tokens
from hookd.config import Config, SecurityConfig
from hookd.daemon import Daemon
from hookd.destinations import DestinationPolicy, IPAddress

from support.daemon import running_daemon

OPERATOR = "ops"
"""Name of the operator token (every tenant) in `api_daemon`'s clients."""

_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer: status, headers, the body parsed as JSON (None when empty or not JSON)."""

    status: int
    headers: CIMultiDictProxy[str]
    json: Any
    text: str

    def problem(self, status: int) -> dict[str, Any]:
        """The body, after checking it is a problem (RFC 9457) with `status`."""
        assert self.status == status, f"expected {status}, got {self.status}: {self.text[:500]}"
        assert self.headers.get("Content-Type", "").startswith("application/problem+json"), (
            self.headers
        )
        body = self.json
        assert isinstance(body, dict), self.text
        assert body["status"] == status and body["title"] and body["type"], body
        assert "Traceback" not in self.text
        return body

    def field_errors(self, status: int = 422) -> dict[str, str]:
        """The problem's `errors` as {pointer or parameter: detail}."""
        body = self.problem(status)
        out = {}
        for e in body.get("errors", []):
            out[e.get("pointer", e.get("parameter", "?"))] = e["detail"]
        return out

    def ok(self, status: int = 200) -> Any:
        """The body, after checking the status."""
        assert self.status == status, f"expected {status}, got {self.status}: {self.text[:500]}"
        return self.json


class ApiClient:
    """Calls the API with one bearer token (None: no Authorization header)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None) -> None:
        self.session = session
        self.base = base
        self.token = token

    async def call(
        self,
        method: str,
        path: str,
        json: Any = _UNSET,
        *,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        hdrs = dict(headers or {})
        if self.token is not None:
            hdrs.setdefault("Authorization", f"Bearer {self.token}")
        body = data
        if json is not _UNSET:
            body = orjson.dumps(json)
            hdrs.setdefault("Content-Type", "application/json")
        async with self.session.request(
            method, self.base + path, params=params, data=body, headers=hdrs
        ) as resp:
            raw = await resp.read()
            text = raw.decode("utf-8", "replace")
            try:
                parsed = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                parsed = None
            return Reply(resp.status, resp.headers, parsed, text)

    async def get(self, path: str, **params: Any) -> Reply:
        clean = {k: str(v) for k, v in params.items() if v is not None}
        return await self.call("GET", path, params=clean)

    async def post(self, path: str, json: Any = _UNSET) -> Reply:
        return await self.call("POST", path, json)

    async def pages(self, path: str, limit: int, **params: Any) -> list[list[dict[str, Any]]]:
        """Every page of a list, following next_cursor (bounded at 100 pages)."""
        out: list[list[dict[str, Any]]] = []
        cursor = None
        for _ in range(100):
            page = (await self.get(path, limit=limit, cursor=cursor, **params)).ok()
            out.append(page["data"])
            cursor = page["next_cursor"]
            if cursor is None:
                return out
        raise AssertionError(f"{path}: more than 100 pages")


async def _endpoint(client: ApiClient, url: str, **fields: Any) -> dict[str, Any]:
    reply = await client.post("/v1/endpoints", {"url": url, **fields})
    created = reply.ok(201)
    assert reply.headers["Location"] == f"/v1/endpoints/{created['id']}"
    return dict(created)


async def _until_delivery(
    client: ApiClient, delivery_id: int, ready: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """GET the delivery until `ready` holds (bounded); outcomes are written in batches."""
    last: Any = None
    try:
        async with asyncio.timeout(10.0):
            while True:
                last = (await client.get(f"/v1/deliveries/{delivery_id}")).ok()
                if ready(last):
                    return dict(last)
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"delivery {delivery_id} not {what} in 10 s: {last}") from None


async def _until_state(client: ApiClient, delivery_id: int, state: str) -> dict[str, Any]:
    return await _until_delivery(client, delivery_id, lambda d: d["state"] == state, state)


async def _deliveries(client: ApiClient, **filters: Any) -> list[dict[str, Any]]:
    return [d for page in await client.pages("/v1/deliveries", 500, **filters) for d in page]


class LoopbackOnlyPolicy(DestinationPolicy):
    """The SSRF guard, stricter: only loopback addresses, for daemons fed generated URLs."""

    def __init__(self) -> None:
        super().__init__()

    def host_allowed(self, host: str) -> bool:
        return False

    def address_allowed(self, addr: IPAddress) -> bool:
        return addr.is_loopback


@dataclasses.dataclass(frozen=True, slots=True)
class LoopbackOnlySecurity(SecurityConfig):
    """[security] whose guard lets the daemon connect to loopback addresses only."""

    def policy(self) -> DestinationPolicy:
        return LoopbackOnlyPolicy()


def loopback_only(cfg: Config) -> Config:
    """`cfg` with the loopback-only guard (for `running_daemon(configure=...)`)."""
    fields = {f.name: getattr(cfg.security, f.name) for f in dataclasses.fields(SecurityConfig)}
    return dataclasses.replace(cfg, security=LoopbackOnlySecurity(**fields))


def write_tokens(path: Path, tenants: tuple[str, ...]) -> dict[str, str]:
    """A tokens file with an operator token and one per tenant; returns name -> token."""
    made = {OPERATOR: tokens.generate(), **{t: tokens.generate() for t in tenants}}
    lines = [tokens.line_for(OPERATOR, made[OPERATOR])]
    lines += [tokens.line_for(t, made[t], tenant=t) for t in tenants]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return made


@asynccontextmanager
async def api_daemon(
    dsn: str,
    tmp_path: Path,
    tenants: tuple[str, ...] = ("acme", "globex"),
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    only_loopback: bool = False,
) -> AsyncIterator[tuple[Daemon, dict[str, ApiClient]]]:
    """A daemon serving the API; yields it and {token name: client} (plus "anonymous").

    `only_loopback`: its SSRF guard refuses every address but loopback (for generated input).
    """
    tokens_file = tmp_path / "api-tokens"
    made = write_tokens(tokens_file, tenants)
    settings: dict[str, dict[str, Any]] = {
        "api": {"port": 0, "tokens_file": str(tokens_file)},
        "security": {"allow_http": True},
    }
    for section, values in (overrides or {}).items():
        settings.setdefault(section, {}).update(values)
    configure = loopback_only if only_loopback else None
    async with (
        running_daemon(dsn, settings, configure=configure) as daemon,
        aiohttp.ClientSession() as session,
    ):
        assert daemon.api is not None and daemon.api.port
        base = f"http://127.0.0.1:{daemon.api.port}"
        clients = {name: ApiClient(session, base, tok) for name, tok in made.items()}
        clients["anonymous"] = ApiClient(session, base, None)
        yield daemon, clients
