"""What an attempt's result means: delivered, retry (maybe later, maybe slower), or disable.

The one place that turns an HTTP status or a network failure into a decision, so that the
dispatcher, the attempt log and the metrics agree. Pure: the caller maps exceptions to a
``FailureKind`` (following aiohttp's ``ClientError`` tree) and passes the wall-clock time in.

Rules (docs/design-notes.md item 13, the common webhook conventions):

* 2xx is delivered;
* 3xx is a failure and is never followed (a signed POST must not be bounced elsewhere; item 9);
* 410 Gone means the receiver wants no more deliveries: disable the endpoint when allowed;
* 429 and 503 ask the sender to back off: honour ``Retry-After`` (RFC 9110 section 10.2.3, both
  delay-seconds and HTTP-date forms), capped, and halve the endpoint's concurrency;
* a status in the *final* set (``http.final_statuses``, per endpoint ``final_statuses``; default
  413 Payload Too Large, which the receiver answers the same way every time) ends the delivery at
  once: a retry cannot succeed. Statuses that HTTP defines as worth repeating (408, 425, 429, 503)
  and 410 (its own rule above) cannot be final: ``check_final_statuses``;
* every other status and every network failure is retried on the policy's schedule: the retry
  policy decides when to stop.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from hookd.destinations import REFUSED_REASON

__all__ = [
    "DEFAULT_FINAL_STATUSES",
    "STATUS_CLASSES",
    "Classification",
    "FailureKind",
    "Verdict",
    "check_final_statuses",
    "classify_failure",
    "classify_response",
    "parse_retry_after",
]


class FailureKind(enum.StrEnum):
    """Why an attempt produced no HTTP response; the caller maps exceptions onto these."""

    DNS = enum.auto()
    """The host name did not resolve."""
    CONNECT = enum.auto()
    """Connection refused or host unreachable."""
    RESET = enum.auto()
    """The connection was reset by the peer."""
    TLS = enum.auto()
    """TLS handshake or certificate verification failed."""
    TIMEOUT = enum.auto()
    """The connect or total timeout expired."""
    DISCONNECT = enum.auto()
    """The server closed the connection before or while sending its response."""
    DESTINATION_REFUSED = enum.auto()
    """The SSRF guard refused the destination address."""
    INVALID = enum.auto()
    """The request cannot be sent: bad URL, endpoint gone."""
    OTHER = enum.auto()
    """Anything else."""


class Verdict(enum.StrEnum):
    """What the dispatcher does with a delivery after an attempt."""

    DELIVERED = "delivered"
    RETRY = "retry"
    DISABLE = "disable"
    """The receiver answered 410 Gone and the configuration allows disabling the endpoint."""
    FINAL = "final"
    """The receiver's answer is in the final set: a retry cannot succeed, dead-letter at once."""


DEFAULT_FINAL_STATUSES: tuple[int, ...] = (413,)
"""Statuses that end a delivery at once unless configured otherwise: 413 Payload Too Large depends
only on the payload, which every attempt sends again unchanged. Not 400, 401, 403, 404 or 422:
receivers answer those during deploys and misconfigurations that an operator fixes, and a
retry then succeeds (README, "How delivery behaves")."""

NEVER_FINAL: dict[int, str] = {
    408: "408 Request Timeout invites the client to repeat the request (RFC 9110 section 15.5.9)",
    410: "410 Gone has its own rule: it disables the endpoint (http.disable_on_gone)",
    425: "425 Too Early asks the client to repeat the request later (RFC 8470 section 5.2)",
    429: "429 Too Many Requests asks the sender to retry later (RFC 6585 section 4, Retry-After)",
    503: "503 Service Unavailable is temporary by definition (RFC 9110 section 15.6.4, Retry-After)",
}
"""Statuses that cannot be final, and why."""


def check_final_statuses(values: Iterable[object]) -> tuple[int, ...]:
    """Validate a final set (``http.final_statuses``, an endpoint's ``final_statuses``): return it
    sorted, without duplicates.

    Each value must be an integer status 400-599 (4xx or 5xx: a 2xx is delivered, a 3xx is a
    redirect that is never followed, and anything else is not a final HTTP answer) and not one of
    ``NEVER_FINAL``. Raises ValueError naming the first bad value.
    """
    out: set[int] = set()
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected HTTP status codes (integers), got {value!r}")
        if not 400 <= value <= 599:
            raise ValueError(f"{value} cannot be final: give 4xx or 5xx statuses (400-599)")
        if value in NEVER_FINAL:
            raise ValueError(f"{value} cannot be final: {NEVER_FINAL[value]}")
        out.add(value)
    return tuple(sorted(out))


STATUS_CLASSES: frozenset[str] = frozenset(
    {"2xx", "3xx", "4xx", "5xx", "timeout", "connect_error", "refused_destination"}
)
"""Every value of ``Classification.status_class``: a bounded metric label set."""


@dataclass(frozen=True, slots=True)
class Classification:
    """The meaning of one attempt's result.

    Fields:
        verdict: delivered, retry or disable.
        status_class: bounded metric label, one of ``STATUS_CLASSES``.
        retry_after_s: seconds the receiver asked us to wait (``Retry-After`` on 429/503), already
            capped; None to use the retry schedule.
        slow_down: 429, 503 and timeouts: the caller halves the endpoint's concurrency.
        reason: short text for the attempt log, e.g. "HTTP 503" or "timeout".
    """

    verdict: Verdict
    status_class: str
    retry_after_s: float | None = None
    slow_down: bool = False
    reason: str = ""


def parse_retry_after(value: str | None, now_unix_s: float) -> float | None:
    """Return the delay in seconds a ``Retry-After`` header value asks for, or None.

    RFC 9110 section 10.2.3: ``Retry-After = HTTP-date / delay-seconds``. delay-seconds is a
    non-negative decimal integer; HTTP-date (IMF-fixdate and the obsolete forms, parsed with
    ``email.utils.parsedate_to_datetime``; a date without zone is taken as UTC) is converted to a
    delay from ``now_unix_s``, the current wall-clock time in Unix seconds. Leniencies: a negative
    integer or a date in the past gives 0.0; an integer too large for a float gives ``math.inf``.
    None, empty or unparseable values give None.

    Raises ValueError when ``now_unix_s`` is not finite.
    """
    if not math.isfinite(now_unix_s):
        raise ValueError(f"now_unix_s must be finite, got {now_unix_s!r}")
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    digits = text.removeprefix("-")
    if digits.isascii() and digits.isdigit():
        # float() of a digit string cannot fail; absurdly long values become inf and get capped.
        return 0.0 if text.startswith("-") else float(digits)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delay = when.timestamp() - now_unix_s
    return delay if delay > 0 else 0.0


def classify_response(
    status: int,
    retry_after: str | None,
    *,
    now_unix_s: float,
    max_retry_after_s: float,
    disable_on_gone: bool = True,
    final_statuses: Collection[int] = (),
) -> Classification:
    """Classify an HTTP response by its status and ``Retry-After`` header value.

    2xx is delivered. 3xx is retried and never followed. 410 gives DISABLE when
    ``disable_on_gone`` else RETRY. 429 and 503 are retried with ``slow_down`` set and
    ``retry_after_s = min(parse_retry_after(retry_after, now_unix_s), max_retry_after_s)`` (None
    when the header is absent or unparseable); ``Retry-After`` on other statuses is ignored. A
    status in ``final_statuses`` (checked by ``check_final_statuses``, so never 2xx, 3xx, 410, 429
    or 503) gives FINAL: the delivery ends without further attempts. Every other status is
    retried. Informational (1xx) and non-standard (600-999) statuses are counted as server errors
    ("5xx").

    ``now_unix_s`` is wall-clock Unix seconds (for HTTP-date values); ``max_retry_after_s`` caps
    how long a receiver can push a retry back (seconds, >= 0). Raises ValueError when ``status`` is
    not a three-digit code or ``max_retry_after_s`` is negative or NaN.
    """
    if not 100 <= status <= 999:
        raise ValueError(f"status must be a three-digit HTTP status code, got {status!r}")
    if not max_retry_after_s >= 0:
        raise ValueError(f"max_retry_after_s must be >= 0, got {max_retry_after_s!r}")
    reason = f"HTTP {status}"
    if 200 <= status < 300:
        return Classification(Verdict.DELIVERED, "2xx", reason=reason)
    if 300 <= status < 400:
        return Classification(Verdict.RETRY, "3xx", reason=f"redirect not followed ({reason})")
    status_class = "4xx" if 400 <= status < 500 else "5xx"
    if status == 410:
        verdict = Verdict.DISABLE if disable_on_gone else Verdict.RETRY
        return Classification(verdict, status_class, reason="HTTP 410 Gone")
    if status in (429, 503):
        parsed = parse_retry_after(retry_after, now_unix_s)
        retry_after_s = None if parsed is None else min(parsed, max_retry_after_s)
        return Classification(
            Verdict.RETRY, status_class, retry_after_s=retry_after_s, slow_down=True, reason=reason
        )
    if status in final_statuses:
        return Classification(
            Verdict.FINAL, status_class, reason=f"{reason}, a final answer: not retried"
        )
    return Classification(Verdict.RETRY, status_class, reason=reason)


_FAILURES: dict[FailureKind, Classification] = {
    FailureKind.DNS: Classification(Verdict.RETRY, "connect_error", reason="DNS lookup failed"),
    FailureKind.CONNECT: Classification(
        Verdict.RETRY, "connect_error", reason="connection refused or unreachable"
    ),
    FailureKind.RESET: Classification(Verdict.RETRY, "connect_error", reason="connection reset"),
    FailureKind.TLS: Classification(Verdict.RETRY, "connect_error", reason="TLS error"),
    FailureKind.TIMEOUT: Classification(Verdict.RETRY, "timeout", slow_down=True, reason="timeout"),
    FailureKind.DISCONNECT: Classification(
        Verdict.RETRY, "connect_error", reason="server disconnected"
    ),
    FailureKind.DESTINATION_REFUSED: Classification(
        Verdict.RETRY, "refused_destination", reason=REFUSED_REASON
    ),
    # Not network errors, but the label set is fixed and bounded; the reason tells them apart.
    FailureKind.INVALID: Classification(
        Verdict.RETRY, "connect_error", reason="request cannot be sent"
    ),
    FailureKind.OTHER: Classification(Verdict.RETRY, "connect_error", reason="unexpected error"),
}


def classify_failure(kind: FailureKind) -> Classification:
    """Classify an attempt that got no HTTP response.

    Always RETRY, never permanent: a transient network state must not lose a delivery, and the
    retry policy bounds the attempts. TIMEOUT sets ``slow_down``. Status classes: "timeout" for
    TIMEOUT, "refused_destination" for DESTINATION_REFUSED (reason exactly
    ``hookd.destinations.REFUSED_REASON``, "refused by the SSRF guard", with which every
    ``DestinationRefused`` message starts), "connect_error" for the rest.
    """
    return _FAILURES[kind]
