"""The decision after an attempt: delivered, paused, retried later, or dead-lettered."""

from __future__ import annotations

from datetime import UTC, datetime

from hookd.classify import FailureKind, classify_failure, classify_response
from hookd.models import AttemptRecord, Delivery, DeliveryState
from hookd.outcome import decide
from hookd.retry import RetryPolicy

CREATED = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RetryPolicy(schedule_s=(0.0, 5.0, 300.0), jitter=0.0, max_attempts=3, max_age_s=3600.0)


def _delivery(attempt: int) -> Delivery:
    return Delivery(1, 2, attempt, 3, "a.b", CREATED, "{}", CREATED)


def _record(attempt: int, status: int | None) -> AttemptRecord:
    return AttemptRecord(1, attempt, CREATED.timestamp(), 0.01, status, None, None)


def test_2xx_is_delivered() -> None:
    out = decide(
        _delivery(1),
        classify_response(204, None, now_unix_s=0, max_retry_after_s=1),
        _record(1, 204),
        POLICY,
        CREATED.timestamp(),
        0.5,
    )
    assert (out.state, out.retry_in_s, out.status) == (DeliveryState.DELIVERED, None, 204)


def test_failure_follows_the_schedule_then_dead_letters() -> None:
    cls = classify_response(500, None, now_unix_s=0, max_retry_after_s=1)
    now = CREATED.timestamp() + 1
    assert decide(_delivery(1), cls, _record(1, 500), POLICY, now, 0.5).retry_in_s == 5.0
    assert decide(_delivery(2), cls, _record(2, 500), POLICY, now, 0.5).retry_in_s == 300.0
    last = decide(_delivery(3), cls, _record(3, 500), POLICY, now, 0.5)
    assert (last.state, last.retry_in_s) == (DeliveryState.FAILED, None)


def test_retry_after_replaces_the_schedule() -> None:
    cls = classify_response(429, "42", now_unix_s=CREATED.timestamp(), max_retry_after_s=600.0)
    out = decide(_delivery(1), cls, _record(1, 429), POLICY, CREATED.timestamp(), 0.5)
    assert (out.state, out.retry_in_s) == (DeliveryState.PENDING, 42.0)


def test_retry_after_does_not_outlive_the_policy() -> None:
    cls = classify_response(503, "42", now_unix_s=CREATED.timestamp(), max_retry_after_s=600.0)
    out = decide(_delivery(3), cls, _record(3, 503), POLICY, CREATED.timestamp(), 0.5)
    assert out.state is DeliveryState.FAILED


def test_too_old_is_dead_lettered() -> None:
    cls = classify_failure(FailureKind.TIMEOUT)
    out = decide(_delivery(1), cls, _record(1, None), POLICY, CREATED.timestamp() + 3599, 0.5)
    assert out.state is DeliveryState.FAILED


def test_410_pauses() -> None:
    cls = classify_response(410, None, now_unix_s=0, max_retry_after_s=1)
    out = decide(_delivery(1), cls, _record(1, 410), POLICY, CREATED.timestamp(), 0.5)
    assert (out.state, out.status) == (DeliveryState.PAUSED, 410)


def test_a_final_answer_dead_letters_on_the_first_attempt() -> None:
    cls = classify_response(413, None, now_unix_s=0, max_retry_after_s=1, final_statuses={413})
    out = decide(_delivery(1), cls, _record(1, 413), POLICY, CREATED.timestamp(), 0.5)
    assert (out.state, out.retry_in_s, out.status) == (DeliveryState.FAILED, None, 413)
