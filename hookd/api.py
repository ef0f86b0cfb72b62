"""The operator HTTP API: endpoints, events, deliveries, attempts and the actions on them.

Routes come from the OpenAPI 3.1 document (hookd/openapi.py, served at GET /openapi.json without
authentication): one per operation, its handler found by `operationId`, its parameters and body
checked against the document's schemas (hookd/validation.py) before the handler runs. The
handlers (hookd/resources.py) call hookd.service.Service and only shape its results as JSON.

Public, without a token: /openapi.json and /catalogue.json (the event catalogue, for receivers).

Authentication: every path under /v1 needs `Authorization: Bearer <token>`, checked against the
tokens file (hookd/tokens.py; RFC 6750). A token limited to a tenant acts in `Scope(tenant)` and
sees other tenants' objects as absent (404). Missing or unknown tokens get a 401 problem with
`WWW-Authenticate: Bearer`.

Errors are RFC 9457 problem details (`application/problem+json`), made in one middleware:
    400 malformed JSON, 401 no or bad token, 404 no such object or path, 405 wrong method,
    403 Forbidden (a tenant's token changing the installation-wide event catalogue),
    409 Conflict (the object's state forbids the action), 413 a body over 1 MiB,
    415 a body that is not application/json, 422 invalid input (`errors` names each field by
    JSON pointer or parameter name), 503 database unavailable (with Retry-After),
    500 anything unexpected (logged once, with a generic title and no traceback in the answer).

Lists are pages, newest first: {"data": [...], "next_cursor": "..." | null}; `next_cursor` is
opaque to clients (it encodes the keyset position, so rows arriving meanwhile shift nothing).

Other parts (the web console) add routes and middlewares through `setups`, callables run on the
`web.Application` before it starts; they reach the service and tokens through SERVICE_KEY and
TOKENS_KEY. Paths outside /v1 are not authenticated here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from hookd.config import ApiConfig
from hookd.errors import ConfigError, DatabaseUnavailable, HookdError, SchemaMissing
from hookd.openapi import DOCUMENT, JSON, MAX_BODY_BYTES, PROBLEM_JSON
from hookd.resources import Call, Handler, Resources
from hookd.service import Conflict, Forbidden, InvalidInput, NotFound, Scope, Service
from hookd.signing import InvalidSecret
from hookd.tokens import ApiToken, TokenFile
from hookd.validation import Contract, FieldError, InvalidRequest, Operation

log = logging.getLogger("hookd.api")

Setup = Callable[[web.Application], None]
"""Adds routes or middlewares to the API's application before it starts."""

SERVICE_KEY = web.AppKey("hookd.service", Service)
TOKENS_KEY = web.AppKey("hookd.tokens", TokenFile)
CONFIG_KEY = web.AppKey("hookd.api_config", ApiConfig)

TOKEN = web.RequestKey("hookd.token", ApiToken)
"""The ApiToken that authenticated a /v1 request."""
SCOPE = web.RequestKey("hookd.scope", Scope)
"""The Scope of a /v1 request."""
OPERATION = web.RequestKey("hookd.operation", Operation)
"""The operation of the OpenAPI document being served."""

RETRY_AFTER_S = 2
"""Retry-After sent with a 503 while the database is unavailable, in seconds."""

_CONTRACT = Contract(DOCUMENT)
_FIELD_PREFIX = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*): ")


class Problem(Exception):
    """An answer of RFC 9457 problem details, raised from anywhere in a request."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        kind: str = "about:blank",
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.kind = kind
        self.errors = list(errors)
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        body: dict[str, Any] = {"type": self.kind, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if self.errors:
            body["errors"] = [e.as_json() for e in self.errors]
        return web.Response(
            status=self.status,
            body=orjson.dumps(body),
            content_type=PROBLEM_JSON,
            headers=self.headers,
        )


class ApiServer:
    """The API's aiohttp server on `cfg.host`:`cfg.port`; async context manager.

    `port` is the bound port after entering (useful with port 0). Raises OSError from entering
    when the address cannot be bound.
    """

    def __init__(
        self,
        service: Service,
        tokens: TokenFile,
        cfg: ApiConfig,
        setups: Sequence[Setup] = (),
    ) -> None:
        self.service = service
        self.tokens = tokens
        self.cfg = cfg
        self._setups = tuple(setups)
        self._runner: web.AppRunner | None = None
        self._token_error: str | None = None
        self.port: int | None = None
        """The bound port (useful when configured as 0)."""

    # -- lifecycle ---------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        """The application: middlewares, one route per operation, then each setup."""
        app = web.Application(
            client_max_size=MAX_BODY_BYTES, middlewares=[self._problems, self._authenticate]
        )
        app[SERVICE_KEY] = self.service
        app[TOKENS_KEY] = self.tokens
        app[CONFIG_KEY] = self.cfg
        handlers = Resources(self.service).handlers()
        missing = set(_CONTRACT.operations) ^ set(handlers)
        assert not missing, f"operations and handlers differ: {sorted(missing)}"
        for op in _CONTRACT.operations.values():
            app.router.add_route(op.method, op.path, self._route(op, handlers[op.operation_id]))
        for setup in self._setups:
            setup(app)
        return app

    async def __aenter__(self) -> ApiServer:
        # A short shutdown timeout: a test call may be waiting up to 30 s for its attempt, and
        # the daemon should not wait for it when it stops.
        runner = web.AppRunner(
            self.build_app(), access_log=None, handle_signals=False, shutdown_timeout=5.0
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.cfg.host, self.cfg.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- middlewares -------------------------------------------------------------------------

    @web.middleware
    async def _problems(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """The one place where exceptions become problem answers."""
        try:
            return await handler(request)
        except Problem as p:
            return p.response()
        except InvalidRequest as exc:
            return _invalid(exc.errors).response()
        except NotFound as exc:
            return Problem(404, "Not Found", str(exc)).response()
        except Forbidden as exc:
            return Problem(403, "Forbidden", str(exc)).response()
        except Conflict as exc:
            return Problem(409, "Conflict", str(exc), kind="urn:hookd:problem:conflict").response()
        except (DatabaseUnavailable, SchemaMissing) as exc:
            log.debug("api: %s %s: %s", request.method, request.path, exc)
            return Problem(
                503,
                "Service Unavailable",
                "the database is unavailable for now; try again later",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ).response()
        except (HookdError, InvalidSecret) as exc:
            return _invalid([self._field_error(request, exc)]).response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _http_problem(request, exc).response()
        except Exception:
            log.exception("api: %s %s failed", request.method, request.path)
            return Problem(
                500, "Internal Server Error", "the server failed; see its log"
            ).response()

    @web.middleware
    async def _authenticate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path == "/v1" or request.path.startswith("/v1/"):
            token = self._token(request.headers.get("Authorization"))
            request[TOKEN] = token
            request[SCOPE] = Scope(token.tenant)
        return await handler(request)

    def _token(self, header: str | None) -> ApiToken:
        """The token a request presents (RFC 6750 section 2.1). Raises Problem 401 or 503."""
        scheme, _, presented = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Problem(
                401,
                "Unauthorized",
                "give a token: Authorization: Bearer <token> (see hookd api-token add)",
                headers={"WWW-Authenticate": 'Bearer realm="hookd"'},
            )
        try:
            token = self.tokens.verify(presented.strip())
            self._token_error = None
        except ConfigError as exc:
            if str(exc) != self._token_error:
                log.error("api: %s", exc)
                self._token_error = str(exc)
            raise Problem(
                503,
                "Service Unavailable",
                "the API's tokens cannot be read; see the daemon's log",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        if token is None:
            raise Problem(
                401,
                "Unauthorized",
                "the token is not valid",
                headers={"WWW-Authenticate": 'Bearer realm="hookd", error="invalid_token"'},
            )
        return token

    @staticmethod
    def _field_error(request: web.Request, exc: Exception) -> FieldError:
        """Name the field a service error is about: a body pointer, or a parameter."""
        field, message = None, str(exc)
        if isinstance(exc, InvalidInput):
            field = exc.field
            message = message.removeprefix(f"{field}: ")
            if field == "before_id":  # the service's name for the keyset position
                field = "cursor"
        elif m := _FIELD_PREFIX.match(message):
            field, message = m.group(1), message[m.end() :]
        if field is None:
            return FieldError(message)
        op = request.get(OPERATION)
        if op is not None and op.body is not None:
            return FieldError(message, pointer="/" + field.replace(".", "/"))
        return FieldError(message, parameter=field)

    # -- routing -----------------------------------------------------------------------------

    def _route(
        self, op: Operation, handler: Handler
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            request[OPERATION] = op
            query = request.query
            repeated = {k for k in query if len(query.getall(k)) > 1}
            args = _CONTRACT.parameters(op, request.match_info, query, repeated)
            body = await self._body(request, op) if op.body is not None else {}
            response = await handler(Call(request, request.get(SCOPE, Scope()), args, body))
            if request.method != "GET":
                token = request.get(TOKEN)
                log.info(
                    "api: %s %s by %s: %d",
                    request.method,
                    request.path,
                    token.name if token else "-",
                    response.status,
                )
            return response

        return serve

    @staticmethod
    async def _body(request: web.Request, op: Operation) -> dict[str, Any]:
        """The request's JSON body, checked against the operation's schema; {} when optional
        and absent."""
        if not request.body_exists:
            if op.body_required:
                raise InvalidRequest([FieldError("required: send a JSON object", pointer="")])
            return {}
        if request.content_type != JSON:
            raise Problem(
                415,
                "Unsupported Media Type",
                f"send the body as {JSON} (got {request.content_type})",
            )
        raw = await request.read()  # HTTPRequestEntityTooLarge past client_max_size
        if not raw and not op.body_required:
            return {}
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Problem(400, "Bad Request", f"the body is not valid JSON: {exc}") from None
        _CONTRACT.body(op, value)
        assert isinstance(value, dict)
        return value


def _invalid(errors: Sequence[FieldError]) -> Problem:
    detail = "; ".join(e.describe() for e in errors[:3])
    if len(errors) > 3:
        detail += f"; and {len(errors) - 3} more"
    return Problem(
        422, "Unprocessable Content", detail, kind="urn:hookd:problem:invalid-input", errors=errors
    )


def _http_problem(request: web.Request, exc: web.HTTPException) -> Problem:
    """A problem for aiohttp's own answers: no route, wrong method, body too large."""
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    if exc.status == 404:
        detail = "no such path (the API is under /v1; its description is /openapi.json)"
    elif exc.status == 405:
        detail = f"{request.method} is not allowed here (allowed: {headers.get('Allow', 'none')})"
    elif exc.status == 413:
        detail = f"the body is larger than {MAX_BODY_BYTES} bytes"
    else:
        detail = exc.text or exc.reason
    return Problem(exc.status, exc.reason, detail, headers=headers)
