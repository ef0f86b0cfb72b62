"""What to write back after an attempt. Pure: the wall-clock time and the jitter draw are passed in.

delivered for 2xx; paused when the receiver answered 410 Gone and disabling is on (the endpoint is
disabled, its deliveries kept); failed (the dead letter) at once for a final answer (a status in the
endpoint's final set, hookd/classify.py: a retry cannot succeed); otherwise the retry policy's next delay, replaced by `Retry-After`
when the receiver sent one on 429/503 (RFC 9110 section 10.2.3, already capped by the
classifier), or failed (the dead letter) once the policy gives up. A test event (`hookd.ping`,
`hookd endpoint test`) is never retried: it fails after its first failed attempt, its last error
saying so (a test reports what the receiver does now; retrying it would only fill the dead letter).
"""

from __future__ import annotations

from hookd.classify import Classification, Verdict
from hookd.models import TEST_EVENT_TYPE, AttemptRecord, Delivery, DeliveryState, Outcome
from hookd.retry import RetryPolicy


def decide(
    d: Delivery,
    cls: Classification,
    rec: AttemptRecord,
    policy: RetryPolicy,
    now_unix_s: float,
    rand: float,
) -> Outcome:
    """The outcome of attempt `rec` of delivery `d`, classified as `cls`.

    `now_unix_s` is wall-clock Unix seconds (for the delivery's age against `max_age_s`); `rand`
    is uniform in [0, 1) for the jitter. A pending outcome's `retry_in_s` is in seconds.
    """
    if cls.verdict is Verdict.DELIVERED:
        return Outcome(d.id, d.attempt, DeliveryState.DELIVERED, None, rec.status, None)
    if cls.verdict is Verdict.DISABLE:
        return Outcome(d.id, d.attempt, DeliveryState.PAUSED, None, rec.status, rec.error)
    if d.event_type == TEST_EVENT_TYPE:
        why = rec.error or (f"HTTP {rec.status}" if rec.status is not None else "failed")
        error = f"test event ({TEST_EVENT_TYPE}), not retried: {why}"
        return Outcome(d.id, d.attempt, DeliveryState.FAILED, None, rec.status, error)
    if cls.verdict is Verdict.FINAL:
        return Outcome(d.id, d.attempt, DeliveryState.FAILED, None, rec.status, rec.error)
    age_s = max(0.0, now_unix_s - d.created_at.timestamp())
    delay = policy.next_delay_s(d.attempt, age_s, rand)
    if delay is None:
        return Outcome(d.id, d.attempt, DeliveryState.FAILED, None, rec.status, rec.error)
    if cls.retry_after_s is not None:
        delay = cls.retry_after_s
    return Outcome(d.id, d.attempt, DeliveryState.PENDING, delay, rec.status, rec.error)
