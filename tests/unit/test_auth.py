"""Unit tests for hookd.auth: endpoint credentials, request headers, TLS contexts and the OAuth 2.0
client-credentials token cache (issue 4, point 3). The same credentials against real servers are
in tests/integration/test_security_auth.py."""

from __future__ import annotations

import base64
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
import pytest
import trustme

from hookd import auth
from hookd.auth import (
    OAuthClient,
    TokenError,
    ssl_context,
    static_headers,
    validate_credentials,
)
from hookd.errors import InvalidEndpoint

SECRET_VALUE = "planted-header-value-7f3c"
OAUTH = {
    "token_url": "https://auth.example/token",
    "client_id": "hookd",
    "client_secret": "planted-client-secret-91ab",
}


# -- validate_credentials: reserved and malformed headers ---------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "webhook-id",
        "Webhook-Signature",
        "WEBHOOK-TIMESTAMP",
        "webhook-anything",
        "Content-Type",
        "content-length",
        "Host",
        "HOST",
        "Transfer-Encoding",
        "Connection",
        "User-Agent",
    ],
)
def test_headers_hookd_sets_itself_are_refused(name: str) -> None:
    with pytest.raises(InvalidEndpoint, match="is set by hookd and cannot be overridden") as info:
        validate_credentials({"headers": {name: SECRET_VALUE}})
    assert name in str(info.value)
    assert SECRET_VALUE not in str(info.value)


@pytest.mark.parametrize("name", ["", "X Api Key", "X:Key", "X-Kéy", "X-Key\r\nEvil", "(x)", "X/Y"])
def test_malformed_header_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidEndpoint, match="not a valid header name"):
        validate_credentials({"headers": {name: "v"}})


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\0b", "", 7, None])
def test_header_values_that_could_inject_or_are_not_text_are_refused(value: Any) -> None:
    with pytest.raises(InvalidEndpoint, match=r"credentials\.headers\.X-Api-Key") as info:
        validate_credentials({"headers": {"X-Api-Key": value}})
    if isinstance(value, str) and value:
        assert value not in str(info.value)


def test_custom_headers_are_kept_and_sent() -> None:
    creds = validate_credentials({"headers": {"X-Api-Key": SECRET_VALUE, "X-Tenant": "acme"}})
    assert static_headers(creds) == {"X-Api-Key": SECRET_VALUE, "X-Tenant": "acme"}


def test_authorization_header_conflicts_with_an_auth_scheme() -> None:
    with pytest.raises(InvalidEndpoint, match="Authorization conflicts"):
        validate_credentials({"bearer": "t", "headers": {"authorization": "Token x"}})
    # On its own, a custom Authorization scheme is fine.
    creds = validate_credentials({"headers": {"Authorization": "Token x"}})
    assert static_headers(creds) == {"Authorization": "Token x"}


# -- validate_credentials: schemes ------------------------------------------------------------


def test_only_one_scheme_at_a_time() -> None:
    with pytest.raises(InvalidEndpoint, match="only one of basic, bearer and oauth2"):
        validate_credentials({"bearer": "t", "basic": {"username": "u", "password": "p"}})
    with pytest.raises(InvalidEndpoint, match="only one"):
        validate_credentials({"bearer": "t", "oauth2": OAUTH})


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(InvalidEndpoint, match="unknown key"):
        validate_credentials({"digest": {"username": "u"}})


@pytest.mark.parametrize(
    ("basic", "message"),
    [
        ({"username": "a:b", "password": "p"}, "must not contain ':'"),
        ({"username": "u", "password": ""}, "password: expected a non-empty string"),
        ({"username": "", "password": "p"}, "username: expected a non-empty string"),
        ({"username": "u"}, "password"),
        ({"username": "u", "password": "p\r\nX: y"}, "line breaks"),
        ("u:p", "expected username and password"),
    ],
)
def test_basic_is_checked(basic: Any, message: str) -> None:
    with pytest.raises(InvalidEndpoint, match=message):
        validate_credentials({"basic": basic})


def test_basic_header_follows_rfc_7617() -> None:
    creds = validate_credentials({"basic": {"username": "Aladdin", "password": "open sesame"}})
    assert static_headers(creds) == {"Authorization": "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="}


def test_basic_password_may_hold_colons_and_utf8() -> None:
    creds = validate_credentials({"basic": {"username": "u", "password": "p:ä:ß"}})
    value = static_headers(creds)["Authorization"].removeprefix("Basic ")
    assert base64.b64decode(value).decode("utf-8") == "u:p:ä:ß"


def test_bearer_header() -> None:
    creds = validate_credentials({"bearer": "tok.en-1"})
    assert static_headers(creds) == {"Authorization": "Bearer tok.en-1"}
    with pytest.raises(InvalidEndpoint, match="line breaks"):
        validate_credentials({"bearer": "t\nX-Evil: 1"})


def test_no_credentials_no_headers() -> None:
    assert static_headers(None) == {}
    assert static_headers({}) == {}
    assert validate_credentials({}) == {}


@pytest.mark.parametrize(
    ("token_url", "message"),
    [
        ("ftp://auth.example/token", "scheme"),
        ("https://user:pw@auth.example/token", "credentials"),
        ("https://auth.example/token#frag", "fragment"),
        ("https:///token", "no host"),
        ("https://auth.example/to ken", "whitespace"),
        ("https://auth.example/" + "t" * 2100, "characters"),
    ],
)
def test_oauth_token_url_is_validated(token_url: str, message: str) -> None:
    with pytest.raises(InvalidEndpoint, match=message) as info:
        validate_credentials({"oauth2": {**OAUTH, "token_url": token_url}})
    assert "token_url" in str(info.value)
    assert OAUTH["client_secret"] not in str(info.value)


def test_oauth_token_url_over_plain_http_follows_allow_http() -> None:
    creds = {"oauth2": {**OAUTH, "token_url": "http://127.0.0.1:9/token"}}
    with pytest.raises(InvalidEndpoint, match="scheme must be https"):
        validate_credentials(creds, allow_http=False)
    assert validate_credentials(creds, allow_http=True)["oauth2"]["token_url"].startswith("http:")


def test_oauth_fields_are_required() -> None:
    for missing in ("token_url", "client_id", "client_secret"):
        partial = {k: v for k, v in OAUTH.items() if k != missing}
        with pytest.raises(InvalidEndpoint, match=missing):
            validate_credentials({"oauth2": partial})


def test_oauth_sends_no_static_authorization() -> None:
    creds = validate_credentials({"oauth2": OAUTH, "headers": {"X-Api-Key": "k"}})
    assert static_headers(creds) == {"X-Api-Key": "k"}


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    ca = trustme.CA()
    client = ca.issue_cert("hookd-client")
    other = trustme.CA().issue_cert("someone-else")
    d = tmp_path_factory.mktemp("pki")
    paths = {
        "ca": d / "ca.pem",
        "cert": d / "client.pem",
        "key": d / "client.key",
        "other_key": d / "other.key",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client.private_key_pem.write_to_path(str(paths["key"]))
    other.private_key_pem.write_to_path(str(paths["other_key"]))
    return {k: str(v) for k, v in paths.items()}


def test_no_tls_settings_means_the_default_verifying_context() -> None:
    assert ssl_context(None) is None
    assert ssl_context(validate_credentials({"bearer": "t"})) is None


def test_tls_context_always_verifies(pki: dict[str, str]) -> None:
    creds = validate_credentials(
        {"tls": {"client_cert": pki["cert"], "client_key": pki["key"], "ca_bundle": pki["ca"]}}
    )
    ctx = ssl_context(creds)
    assert ctx is not None
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    ca_only = ssl_context(validate_credentials({"tls": {"ca_bundle": pki["ca"]}}))
    assert ca_only is not None and ca_only.verify_mode is ssl.CERT_REQUIRED


def test_tls_cert_and_key_go_together(pki: dict[str, str]) -> None:
    with pytest.raises(InvalidEndpoint, match="together"):
        validate_credentials({"tls": {"client_cert": pki["cert"]}})
    with pytest.raises(InvalidEndpoint, match="only client_cert, client_key and ca_bundle"):
        validate_credentials({"tls": {"verify": False}})


def test_tls_files_that_do_not_load_are_a_clear_error(pki: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(InvalidEndpoint, match=r"credentials\.tls"):
        ssl_context({"tls": {"ca_bundle": str(tmp_path / "missing.pem")}})
    with pytest.raises(InvalidEndpoint, match=r"credentials\.tls"):
        ssl_context({"tls": {"client_cert": pki["cert"], "client_key": pki["other_key"]}})


# -- OAuth 2.0 client credentials -------------------------------------------------------------


def _token_body(token: str, expires_in: Any = 3600) -> bytes:
    return orjson.dumps({"access_token": token, "token_type": "Bearer", "expires_in": expires_in})


def test_token_request_is_rfc_6749_client_credentials() -> None:
    url, form, headers = OAuthClient({**OAUTH, "scope": "hooks:write"}).form()
    assert url == OAUTH["token_url"]
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    fields = parse_qs(form.decode(), strict_parsing=True)
    assert fields == {
        "grant_type": ["client_credentials"],
        "client_id": ["hookd"],
        "client_secret": [OAUTH["client_secret"]],
        "scope": ["hooks:write"],
    }


def test_token_is_cached_until_shortly_before_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    client = OAuthClient(OAUTH)
    assert client.cached() is None
    assert client.accept(200, _token_body("tok-1", 120)) == "tok-1"
    assert client.fetches == 1
    assert client.cached() == "tok-1"
    now[0] += 120 - auth.TOKEN_REFRESH_MARGIN_S - 1
    assert client.cached() == "tok-1"
    now[0] += 2
    assert client.cached() is None


def test_short_lived_token_is_not_reused() -> None:
    client = OAuthClient(OAUTH)
    client.accept(200, _token_body("tok", auth.TOKEN_REFRESH_MARGIN_S - 1))
    assert client.cached() is None


def test_token_without_expiry_defaults_to_an_hour() -> None:
    client = OAuthClient(OAUTH)
    client.accept(200, orjson.dumps({"access_token": "tok"}))
    assert client.cached() == "tok"


def test_invalidate_drops_only_the_refused_token() -> None:
    client = OAuthClient(OAUTH)
    client.accept(200, _token_body("tok-1"))
    client.invalidate("some-older-token")
    assert client.cached() == "tok-1"
    client.invalidate("tok-1")
    assert client.cached() is None


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (401, _token_body("leaked-token"), "HTTP 401"),
        (500, b"internal error planted-client-secret-91ab", "HTTP 500"),
        (200, b"not json", "no access_token"),
        (200, orjson.dumps({"token": "x"}), "no access_token"),
        (200, orjson.dumps({"access_token": ""}), "no access_token"),
        (200, orjson.dumps({"access_token": 5}), "no access_token"),
        (200, orjson.dumps(["access_token"]), "no access_token"),
        (200, orjson.dumps({"access_token": "x", "expires_in": "soon"}), "no access_token"),
    ],
)
def test_bad_token_answers_raise_without_echoing_the_body(
    status: int, body: bytes, message: str
) -> None:
    client = OAuthClient(OAUTH)
    with pytest.raises(TokenError, match=message) as info:
        client.accept(status, body)
    text = str(info.value)
    assert "leaked-token" not in text and OAUTH["client_secret"] not in text
    assert client.cached() is None and client.fetches == 0


def test_cache_uses_a_monotonic_clock() -> None:
    client = OAuthClient(OAUTH)
    client.accept(200, _token_body("tok", 3600))
    assert client._expires_at > time.monotonic()
