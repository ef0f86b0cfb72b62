"""The endpoint side of the operating service (hookd/service.py): `EndpointOperations`, the
methods that list, read, create, change and delete endpoints, rotate and reveal their signing
secrets and report their stats, with the checks that need more than the input itself (the SSRF
guard's look at a URL's destination, PostgreSQL's check of a payload filter, credentials by
scope). `Service` inherits it; it is not used alone.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from hookd.auth import validate_credentials
from hookd.destinations import DestinationPolicy, DestinationRefused, literal_addresses
from hookd.errors import InvalidEndpoint, InvalidPayloadFilter
from hookd.models import Endpoint, EndpointStats
from hookd.service_types import (
    MAX_FILTER_LENGTH,
    MAX_GRACE_S,
    MAX_ID,
    RESOLVE_TIMEOUT_S,
    UNSET,
    EndpointChanges,
    InvalidInput,
    NewEndpoint,
    NotFound,
    Page,
    PageRequest,
    Scope,
    SecretView,
)
from hookd.service_validation import (
    _check_page,
    _description,
    _event_types,
    _filter_problem,
    _invalid,
    _metadata,
    _page,
    _setting_changes,
    _settings,
    _tenant,
    _text,
    check_url,
)
from hookd.signing import InvalidSecret, decode_secret, generate_secret, public_key
from hookd.store import Store


class EndpointOperations:
    """Endpoints within a scope (see hookd.service for scopes and errors); part of `Service`."""

    store: Store
    allow_http: bool
    policy: DestinationPolicy | None

    # -- validation shared by create and update ----------------------------------------------

    async def _url(self, value: object) -> str:
        """A valid endpoint URL whose destination the SSRF guard allows.

        IP literals (any spelling) are checked directly; a host name is resolved (at most
        RESOLVE_TIMEOUT_S) and every address checked. A name that does not resolve now is
        accepted: the guard checks again at every delivery.
        """
        url = check_url(value, allow_http=self.allow_http)
        host = urlsplit(url).hostname
        if self.policy is None or not host:
            return url
        try:
            self.policy.check_host(host)
            if self.policy.host_allowed(host) or literal_addresses(host):
                return url
            try:
                async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                    infos = await asyncio.get_running_loop().getaddrinfo(
                        host, None, type=socket.SOCK_STREAM
                    )
            except (OSError, TimeoutError, UnicodeError):
                return url  # not resolvable now: the delivery-time guard still applies
            self.policy.check_addresses(host, [str(info[4][0]) for info in infos])
        except DestinationRefused as exc:
            raise InvalidInput("url", str(exc)) from None
        return url

    async def check_payload_filter(self, value: object) -> str | None:
        """A payload filter as stored: PostgreSQL's canonical text of `value` (None: no filter).

        The filter is a predicate in PostgreSQL's SQL/JSON path language, evaluated at fan-out
        with `payload @@ filter` (jsonb_path_match): a comparison (`$.total > 100`), a boolean
        combination (`&&`, `||`, `!`), `exists($.field)`, `like_regex`, `starts with`,
        `is unknown`. Only true creates a delivery; false and unknown (strict mode meeting a
        missing field, a type mismatch) do not. A bare path (`$.total`) is not a predicate and is
        refused: `@@` would answer unknown for it, and `@?` (jsonb_path_exists) would be true
        whenever a result exists, even `false`. PostgreSQL itself checks the text; no evaluator
        of hookd's own.

        Raises InvalidInput("filter", <PostgreSQL's message>) for an empty or invalid filter, one
        that is not a predicate, or one that names a variable ($x).
        """
        if value is None:
            return None
        text = _text("filter", value, MAX_FILTER_LENGTH)
        if not text.strip():
            raise InvalidInput("filter", "must not be empty (null, or --no-filter, removes it)")
        try:
            return await self.store.check_payload_filter(text)
        except InvalidPayloadFilter as exc:
            raise InvalidInput("filter", _filter_problem(exc)) from None

    def _credentials(self, scope: Scope, value: object) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise InvalidInput("credentials", "expected an object (see the authentication kinds)")
        if scope.tenant is not None and "tls" in value:
            # TLS files are paths on the daemon's host: a tenant could probe for files or make
            # hookd use one of the operator's.
            raise InvalidInput(
                "credentials.tls", "file paths on the daemon's host; only an operator sets them"
            )
        try:
            return validate_credentials(value, allow_http=self.allow_http) or None
        except InvalidEndpoint as exc:
            raise _invalid(exc, "credentials") from None

    # -- endpoints ---------------------------------------------------------------------------

    async def list_endpoints(self, scope: Scope, page: PageRequest) -> Page[Endpoint]:
        """Endpoints in scope, newest first."""
        before = _check_page(page)
        rows = await self.store.endpoints_page(scope.tenant, before, page.limit + 1)
        return _page(rows, page.limit)

    async def get_endpoint(self, scope: Scope, endpoint_id: int) -> Endpoint:
        """One endpoint. Raises NotFound."""
        ep = None
        if 1 <= endpoint_id <= MAX_ID:
            ep = await self.store.endpoint(endpoint_id, scope.tenant)
        if ep is None:
            raise NotFound(f"no endpoint with id {endpoint_id}")
        return ep

    async def create_endpoint(self, scope: Scope, new: NewEndpoint) -> tuple[Endpoint, str]:
        """Returns the endpoint and its signing secret (shown once here; `reveal_secret` later).
        A tenant scope forces `tenant` to the scope's tenant (InvalidInput if another is given).

        Raises InvalidInput for any invalid field, including a URL the SSRF guard refuses
        (`security.allow_cidrs` / `security.allow_hosts` open internal targets).
        """
        tenant = _tenant(new.tenant)
        if scope.tenant is not None:
            if tenant is not None and tenant != scope.tenant:
                raise InvalidInput("tenant", "can only create endpoints of the caller's tenant")
            tenant = scope.tenant
        event_types = _event_types(new.event_types)
        description = _description(new.description)
        metadata = _metadata(new.metadata)
        settings = _settings(new.settings)
        credentials = self._credentials(scope, new.credentials)
        payload_filter = await self.check_payload_filter(new.payload_filter)
        if not isinstance(new.enabled, bool):
            raise InvalidInput("enabled", "expected true or false")
        if new.secret is None:
            if new.kind not in ("hmac", "ed25519"):
                raise InvalidInput("kind", "expected 'hmac' or 'ed25519'")
            secret = generate_secret(new.kind)
        else:
            secret = _text("secret", new.secret, 200)
            try:
                decode_secret(secret)
            except InvalidSecret as exc:
                raise InvalidInput("secret", str(exc)) from None
        url = await self._url(new.url)
        ep = await self.store.add_endpoint(
            url,
            secret,
            event_types,
            tenant,
            settings,
            description=description,
            metadata=metadata,
            credentials=credentials,
            enabled=new.enabled,
            payload_filter=payload_filter,
        )
        return ep, secret

    async def update_endpoint(
        self, scope: Scope, endpoint_id: int, changes: EndpointChanges
    ) -> Endpoint:
        """Change only the fields of `changes` that are not UNSET (see EndpointChanges), in one
        transaction, and return the endpoint as it is now.

        `settings` None removes every override. `enabled` False pauses the endpoint's pending
        deliveries, True resumes them. A tenant scope cannot move an endpoint to another tenant
        (InvalidInput "tenant"). Raises NotFound, InvalidInput.
        """
        current = await self.get_endpoint(scope, endpoint_id)
        fields: dict[str, Any] = {}
        if changes.url is not UNSET:
            fields["url"] = await self._url(changes.url)
        if changes.event_types is not UNSET:
            fields["event_types"] = list(_event_types(changes.event_types))
        if changes.tenant is not UNSET:
            tenant = _tenant(changes.tenant)
            if scope.tenant is not None and tenant != scope.tenant:
                raise InvalidInput("tenant", "cannot move an endpoint out of the caller's tenant")
            fields["tenant"] = tenant
        if changes.description is not UNSET:
            fields["description"] = _description(changes.description)
        if changes.metadata is not UNSET:
            fields["metadata"] = _metadata(changes.metadata)
        if changes.payload_filter is not UNSET:
            fields["payload_filter"] = await self.check_payload_filter(changes.payload_filter)
        unset: list[str] = []
        if changes.settings is not UNSET:
            if changes.settings is None:
                unset = list(current.settings)
            else:
                fields["settings"], unset = _setting_changes(changes.settings)
        replace_credentials = changes.credentials is not UNSET
        credentials = self._credentials(scope, changes.credentials) if replace_credentials else None
        enabled: bool | None = None
        if changes.enabled is not UNSET:
            if not isinstance(changes.enabled, bool):
                raise InvalidInput("enabled", "expected true or false")
            enabled = changes.enabled
        if not fields and not unset and not replace_credentials and enabled is None:
            return current
        ep = await self.store.update_endpoint(
            endpoint_id,
            scope.tenant,
            fields,
            settings_unset=unset,
            credentials=credentials,
            replace_credentials=replace_credentials,
            enabled=enabled,
        )
        if ep is None:
            raise NotFound(f"no endpoint with id {endpoint_id}")
        return ep

    async def delete_endpoint(self, scope: Scope, endpoint_id: int) -> None:
        """Delete an endpoint; its open deliveries are settled as failed, its history stays.
        Raises NotFound."""
        await self.get_endpoint(scope, endpoint_id)
        if not await self.store.delete_endpoint(endpoint_id, scope.tenant):
            raise NotFound(f"no endpoint with id {endpoint_id}")

    async def rotate_secret(
        self, scope: Scope, endpoint_id: int, grace_s: float, secret: str | None = None
    ) -> SecretView:
        """Make a new signing secret current (`secret`, or a generated one of the same kind);
        the old one also signs for `grace_s` seconds (0 to MAX_GRACE_S). Raises NotFound,
        InvalidInput."""
        if not (isinstance(grace_s, int | float) and 0 <= grace_s <= MAX_GRACE_S):
            raise InvalidInput("grace_s", f"expected 0 to {MAX_GRACE_S:.0f} seconds")
        current = await self.get_endpoint(scope, endpoint_id)
        if secret is None:
            secret = generate_secret("ed25519" if current.secret.startswith("whsk_") else "hmac")
        else:
            secret = _text("secret", secret, 200)
            try:
                decode_secret(secret)
            except InvalidSecret as exc:
                raise InvalidInput("secret", str(exc)) from None
        if not await self.store.rotate_secret(endpoint_id, secret, float(grace_s)):
            raise NotFound(f"no endpoint with id {endpoint_id}")
        return await self.reveal_secret(scope, endpoint_id)

    async def reveal_secret(self, scope: Scope, endpoint_id: int) -> SecretView:
        """The endpoint's current signing secret (and its Ed25519 public key). Raises NotFound."""
        ep = await self.get_endpoint(scope, endpoint_id)
        return SecretView(ep.id, ep.secret, public_key(ep.secret), ep.previous_secret_until)

    async def endpoint_stats(self, scope: Scope, endpoint_id: int) -> EndpointStats:
        """The endpoint's newest attempt and its attempts over the last hour and day.
        Raises NotFound."""
        await self.get_endpoint(scope, endpoint_id)
        return await self.store.endpoint_stats(endpoint_id)
