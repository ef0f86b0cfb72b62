"""Unit tests for hookd.classify."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookd.classify import (
    DEFAULT_FINAL_STATUSES,
    NEVER_FINAL,
    STATUS_CLASSES,
    Classification,
    FailureKind,
    Verdict,
    check_final_statuses,
    classify_failure,
    classify_response,
    parse_retry_after,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def _http_date(unix_s: float) -> str:
    return format_datetime(datetime.fromtimestamp(unix_s, UTC), usegmt=True)


def _classify(status: int, retry_after: str | None = None, **kwargs: Any) -> Classification:
    return classify_response(
        status, retry_after, now_unix_s=NOW, max_retry_after_s=3600.0, **kwargs
    )


# --- Retry-After (RFC 9110 section 10.2.3) --------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("  30 ", 30.0),
        ("-5", 0.0),
        ("9" * 400, math.inf),
        (None, None),
        ("", None),
        ("   ", None),
        ("soon", None),
        ("1.5", None),
        ("+5", None),
        ("12abc", None),
        ("1e3", None),
        ("\u0663", None),  # a non-ASCII digit is not delay-seconds
        ("Mon, 99 Foo 2023 07:28:00 GMT", None),
    ],
)
def test_parse_retry_after_seconds_and_garbage(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_http_date_future_and_past() -> None:
    assert parse_retry_after(_http_date(NOW + 90), NOW) == pytest.approx(90.0)
    assert parse_retry_after(_http_date(NOW - 90), NOW) == 0.0
    assert parse_retry_after(_http_date(NOW), NOW) == 0.0


@pytest.mark.parametrize(
    "value",
    [
        "Tue, 14 Nov 2023 22:15:00 GMT",  # IMF-fixdate
        "Tuesday, 14-Nov-23 22:15:00 GMT",  # obsolete RFC 850 form
        "Tue Nov 14 22:15:00 2023",  # obsolete asctime form (no zone: UTC)
    ],
)
def test_parse_retry_after_all_http_date_forms(value: str) -> None:
    assert parse_retry_after(value, NOW) == pytest.approx(100.0)


def test_parse_retry_after_rejects_non_finite_now() -> None:
    with pytest.raises(ValueError, match="now_unix_s"):
        parse_retry_after("5", math.nan)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_parse_retry_after_never_raises_and_is_non_negative(value: str) -> None:
    result = parse_retry_after(value, NOW)
    assert result is None or result >= 0.0


# --- HTTP responses -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_delivered(status: int) -> None:
    assert _classify(status) == Classification(Verdict.DELIVERED, "2xx", reason=f"HTTP {status}")


@pytest.mark.parametrize("status", [300, 301, 302, 303, 307, 308])
def test_3xx_retried_not_followed(status: int) -> None:
    result = _classify(status, "10")
    assert result == Classification(
        Verdict.RETRY, "3xx", reason=f"redirect not followed (HTTP {status})"
    )


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 413, 422, 499])
def test_4xx_retried(status: int) -> None:
    assert _classify(status, "10") == Classification(Verdict.RETRY, "4xx", reason=f"HTTP {status}")


@pytest.mark.parametrize("status", [500, 501, 502, 504, 599])
def test_5xx_retried(status: int) -> None:
    assert _classify(status, "10") == Classification(Verdict.RETRY, "5xx", reason=f"HTTP {status}")


@pytest.mark.parametrize("status", [100, 101, 199, 600, 999])
def test_unusual_statuses_count_as_server_errors(status: int) -> None:
    assert _classify(status) == Classification(Verdict.RETRY, "5xx", reason=f"HTTP {status}")


@pytest.mark.parametrize("status", [0, 99, 1000, -1])
def test_non_http_status_rejected(status: int) -> None:
    with pytest.raises(ValueError, match="status"):
        _classify(status)


def test_410_disables_when_allowed() -> None:
    assert _classify(410) == Classification(Verdict.DISABLE, "4xx", reason="HTTP 410 Gone")
    assert _classify(410, disable_on_gone=False) == Classification(
        Verdict.RETRY, "4xx", reason="HTTP 410 Gone"
    )


@pytest.mark.parametrize(("status", "status_class"), [(429, "4xx"), (503, "5xx")])
def test_429_and_503_slow_down_and_honour_retry_after(status: int, status_class: str) -> None:
    assert _classify(status, "120") == Classification(
        Verdict.RETRY, status_class, retry_after_s=120.0, slow_down=True, reason=f"HTTP {status}"
    )
    # HTTP-date form, capped, absent, garbage.
    assert _classify(status, _http_date(NOW + 600)).retry_after_s == pytest.approx(600.0)
    assert _classify(status, _http_date(NOW + 86_400)).retry_after_s == 3600.0
    assert _classify(status, "999999").retry_after_s == 3600.0
    assert _classify(status, "9" * 400).retry_after_s == 3600.0
    assert _classify(status, _http_date(NOW - 5)).retry_after_s == 0.0
    absent = _classify(status)
    assert absent.retry_after_s is None and absent.slow_down
    assert _classify(status, "later").retry_after_s is None


def test_retry_after_ignored_on_other_statuses() -> None:
    assert _classify(500, "30").retry_after_s is None
    assert _classify(301, "30").retry_after_s is None


def test_max_retry_after_validated() -> None:
    with pytest.raises(ValueError, match="max_retry_after_s"):
        classify_response(503, "5", now_unix_s=NOW, max_retry_after_s=-1.0)
    with pytest.raises(ValueError, match="max_retry_after_s"):
        classify_response(503, "5", now_unix_s=NOW, max_retry_after_s=math.nan)
    zero_cap = classify_response(503, "5", now_unix_s=NOW, max_retry_after_s=0.0)
    assert zero_cap.retry_after_s == 0.0


@given(st.integers(100, 999), st.none() | st.text(max_size=30), st.booleans())
def test_every_status_gets_a_bounded_label(status: int, header: str | None, gone: bool) -> None:
    result = classify_response(
        status, header, now_unix_s=NOW, max_retry_after_s=60.0, disable_on_gone=gone
    )
    assert result.status_class in STATUS_CLASSES
    assert (result.verdict is Verdict.DELIVERED) == (200 <= status < 300)
    assert (result.verdict is Verdict.DISABLE) == (status == 410 and gone)
    assert result.slow_down == (status in (429, 503))
    if result.retry_after_s is not None:
        assert 0.0 <= result.retry_after_s <= 60.0
    assert result.reason


# --- Network failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status_class", "slow_down", "reason"),
    [
        (FailureKind.DNS, "connect_error", False, "DNS lookup failed"),
        (FailureKind.CONNECT, "connect_error", False, "connection refused or unreachable"),
        (FailureKind.RESET, "connect_error", False, "connection reset"),
        (FailureKind.TLS, "connect_error", False, "TLS error"),
        (FailureKind.TIMEOUT, "timeout", True, "timeout"),
        (FailureKind.DISCONNECT, "connect_error", False, "server disconnected"),
        (
            FailureKind.DESTINATION_REFUSED,
            "refused_destination",
            False,
            "refused by the SSRF guard",
        ),
        (FailureKind.INVALID, "connect_error", False, "request cannot be sent"),
        (FailureKind.OTHER, "connect_error", False, "unexpected error"),
    ],
)
def test_failures_are_retried(
    kind: FailureKind, status_class: str, slow_down: bool, reason: str
) -> None:
    assert classify_failure(kind) == Classification(
        Verdict.RETRY, status_class, slow_down=slow_down, reason=reason
    )


def test_every_failure_kind_is_classified() -> None:
    for kind in FailureKind:
        result = classify_failure(kind)
        assert result.verdict is Verdict.RETRY
        assert result.status_class in STATUS_CLASSES
        assert result.retry_after_s is None


def test_enum_values_are_stable_strings() -> None:
    assert [k.value for k in FailureKind] == [
        "dns",
        "connect",
        "reset",
        "tls",
        "timeout",
        "disconnect",
        "destination_refused",
        "invalid",
        "other",
    ]
    assert [v.value for v in Verdict] == ["delivered", "retry", "disable", "final"]


# --- final answers ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [413, 422, 501])
def test_a_final_status_ends_the_delivery(status: int) -> None:
    result = _classify(status, "10", final_statuses=frozenset({413, 422, 501}))
    assert result.verdict is Verdict.FINAL
    assert result.reason == f"HTTP {status}, a final answer: not retried"
    assert not result.slow_down and result.retry_after_s is None


def test_statuses_outside_the_final_set_are_retried() -> None:
    assert _classify(422, final_statuses=frozenset({413})).verdict is Verdict.RETRY
    # No set given: nothing is final (the configuration supplies the default, 413).
    assert _classify(413).verdict is Verdict.RETRY
    assert DEFAULT_FINAL_STATUSES == (413,)


def test_2xx_and_410_keep_their_meaning_whatever_the_set() -> None:
    # check_final_statuses refuses these, but the classifier's order does not depend on it.
    assert _classify(204, final_statuses={204}).verdict is Verdict.DELIVERED
    assert _classify(410, final_statuses={410}).verdict is Verdict.DISABLE


def test_check_final_statuses_sorts_and_deduplicates() -> None:
    assert check_final_statuses([422, 413, 413, 501]) == (413, 422, 501)
    assert check_final_statuses([]) == ()


@pytest.mark.parametrize("status", sorted(NEVER_FINAL))
def test_statuses_that_ask_for_a_retry_cannot_be_final(status: int) -> None:
    with pytest.raises(ValueError, match=f"^{status} cannot be final: {status} "):
        check_final_statuses([413, status])


@pytest.mark.parametrize("value", [200, 302, 399, 600, 99])
def test_final_statuses_are_4xx_or_5xx(value: int) -> None:
    with pytest.raises(ValueError, match="give 4xx or 5xx statuses"):
        check_final_statuses([value])


@pytest.mark.parametrize("value", ["413", 413.0, True, None])
def test_final_statuses_are_integers(value: object) -> None:
    with pytest.raises(ValueError, match="expected HTTP status codes"):
        check_final_statuses([value])
