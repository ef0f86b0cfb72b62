-- Named queries used by hookd.store. Each block starts with "-- name: <name>".

-- name: fan_out
-- Claim up to $1 events not yet fanned out, oldest first from ids above $6, plus up to $7 of the
-- newest ones (the fresh lane: while a backlog drains from its head, events published now still
-- go out at once), and create one delivery per matching enabled endpoint, whatever room the
-- endpoints have (the outbox is never blocked). Of each endpoint's new deliveries, the first
-- `room` of ($4, $5) are leased at once to $3 for $2 seconds; the rest (and all of endpoints not
-- listed) stay pending, unleased and due now.
-- $6 lets a draining daemon start past the index entries of events it already fanned out (dead
-- until vacuum, but still visited by a scan from the start); a scan from 0 catches the rest.
-- Bounded pieces: at most $8 deliveries per statement, in (event id, endpoint id) order. The
-- event at which the bound is reached is cut: it keeps its fanned_out_at NULL and records in
-- fan_out_cursor the highest endpoint id it now has a delivery for, and the next claim of it
-- starts after that endpoint; the events after it are left as they were. One piece reads at most
-- $8 + 1 matching pairs (an incremental sort over the events in id order, each one's endpoints in
-- id order).
-- Per-key ordering: a delivery with an ordering key is leased only if it is the head of its
-- (endpoint, key): the first of the key in this batch, no earlier delivery of the key open for
-- the endpoint, and no earlier event of the key still waiting for fan-out (committed late,
-- skipped by this scan, cut into pieces, or being fanned out by another daemon). Others wait for
-- claim_due.
WITH head AS (
    SELECT id, event_type, tenant, created_at, payload, ordering_key, fan_out_cursor
    FROM hookd.events
    WHERE fanned_out_at IS NULL AND id > $6
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), tail AS (
    SELECT id, event_type, tenant, created_at, payload, ordering_key, fan_out_cursor
    FROM hookd.events
    WHERE fanned_out_at IS NULL AND id <> ALL (ARRAY(SELECT id FROM head))
    ORDER BY id DESC
    LIMIT $7
    FOR UPDATE SKIP LOCKED
), ev AS (
    SELECT *, false AS newest FROM head UNION ALL SELECT *, true FROM tail
), piece AS (
    SELECT e.id AS event_id, e.ordering_key, m.endpoint_id,
           row_number() OVER (ORDER BY e.id, m.endpoint_id) AS n
    FROM (SELECT * FROM ev ORDER BY id) e
    CROSS JOIN LATERAL (
        SELECT ep.id AS endpoint_id
        FROM hookd.endpoints ep
        WHERE ep.id > coalesce(e.fan_out_cursor, 0)
          AND ep.enabled
          AND ep.tenant IS NOT DISTINCT FROM e.tenant
          AND ep.created_at <= e.created_at
          AND hookd.filter_matches(ep.event_types, e.event_type)
          AND (ep.payload_filter IS NULL OR hookd.payload_matches(e.payload, ep.payload_filter))
        ORDER BY ep.id
        LIMIT $8 + 1
    ) m
    ORDER BY e.id, m.endpoint_id
    LIMIT $8 + 1
), cut AS (
    -- The event whose pair $8 + 1 is: it (from that endpoint on) and every later event wait.
    SELECT event_id, endpoint_id FROM piece WHERE n = $8 + 1
), kept AS (
    SELECT event_id, ordering_key, endpoint_id FROM piece WHERE n <= $8
), done AS (
    SELECT id FROM ev WHERE NOT EXISTS (SELECT FROM cut) OR id < (SELECT event_id FROM cut)
), marked AS (
    -- By primary key: a join here lets the planner scan the whole history. The set_config (once,
    -- an InitPlan) makes this transaction commit asynchronously (see hookd/store_hotpath.py); a
    -- data-modifying CTE always runs, and without events claimed there is nothing to commit (a
    -- piece of a cut event sets it in `advanced`).
    UPDATE hookd.events e SET fanned_out_at = now(), fan_out_cursor = NULL
    WHERE e.id = ANY (ARRAY(SELECT id FROM done))
      AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'
), advanced AS (
    UPDATE hookd.events e SET fan_out_cursor = k.endpoint_id
    FROM (SELECT max(endpoint_id) AS endpoint_id FROM kept
          WHERE event_id = (SELECT event_id FROM cut)) k
    WHERE e.id = (SELECT event_id FROM cut) AND k.endpoint_id IS NOT NULL
      AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'
), behind AS (
    -- Keyed events of this piece with an earlier event of their key that is neither done here
    -- nor fanned out.
    SELECT k.event_id AS id FROM (SELECT DISTINCT event_id, ordering_key FROM kept) k
    WHERE k.ordering_key IS NOT NULL AND EXISTS (
        SELECT 1 FROM hookd.events p
        WHERE p.ordering_key = k.ordering_key AND p.id < k.event_id AND p.fanned_out_at IS NULL
          AND p.id <> ALL (ARRAY(SELECT id FROM done)))
), matched AS (
    SELECT k.event_id, k.ordering_key, k.endpoint_id,
           k.ordering_key IS NULL
           OR (row_number() OVER (PARTITION BY k.endpoint_id, k.ordering_key ORDER BY k.event_id) = 1
               AND k.event_id <> ALL (ARRAY(SELECT id FROM behind))
               AND NOT EXISTS (
                   SELECT 1 FROM hookd.deliveries p
                   WHERE p.endpoint_id = k.endpoint_id AND p.ordering_key = k.ordering_key
                     AND p.event_id < k.event_id AND p.state IN ('pending', 'paused')))
           AS key_head
    FROM kept k
), pairs AS (
    SELECT m.event_id, m.ordering_key, m.endpoint_id, m.key_head,
           m.key_head AND row_number() OVER (PARTITION BY m.endpoint_id, m.key_head ORDER BY m.event_id)
                          <= coalesce(r.room, 0) AS lease
    FROM matched m
    LEFT JOIN unnest($4::bigint[], $5::int[]) AS r (endpoint_id, room) ON r.endpoint_id = m.endpoint_id
), ins AS (
    -- Straight into the partition of open deliveries: its unique (event_id, endpoint_id) is the
    -- conflict target (a partitioned table has none without the partition key). The id from the
    -- parent's identity sequence, named: before PostgreSQL 17 a partition does not inherit it.
    INSERT INTO hookd.deliveries_open (id, event_id, endpoint_id, attempts, next_attempt_at,
                                       lease_owner, ordering_key, event_created_at)
    OVERRIDING SYSTEM VALUE
    SELECT nextval('hookd.deliveries_id_seq'), pairs.event_id, pairs.endpoint_id,
           CASE WHEN lease THEN 1 ELSE 0 END,
           CASE WHEN lease THEN now() + make_interval(secs => $2) ELSE now() END,
           CASE WHEN lease THEN $3::uuid END,
           pairs.ordering_key, ev.created_at
    FROM pairs JOIN ev ON ev.id = pairs.event_id
    ON CONFLICT (event_id, endpoint_id) DO NOTHING
    RETURNING id, event_id, endpoint_id, attempts, lease_owner
)
-- One row per delivery created, plus one row with NULL delivery columns per event that matched no
-- endpoint, so the caller can count the events it claimed; `done` false for the event that was
-- cut and those after it (not claimed yet). `leased` tells which rows are ours; `key_head` false
-- marks an unleased one that waits for an earlier one of its key (not for room). Only leased rows
-- carry the payload: the others are counted, not sent.
SELECT ins.id, ins.endpoint_id, ins.attempts, ins.lease_owner IS NOT NULL AS leased,
       ev.id AS event_id, ev.event_type, ev.created_at, ev.newest, ev.ordering_key,
       CASE WHEN ins.lease_owner IS NOT NULL THEN ev.payload END AS payload,
       p.key_head, ev.id IN (SELECT id FROM done) AS done,
       (SELECT event_id FROM cut) AS cut_event_id
FROM ev
LEFT JOIN ins ON ins.event_id = ev.id
LEFT JOIN pairs p ON p.event_id = ins.event_id AND p.endpoint_id = ins.endpoint_id;

-- name: claim_due
-- Lease due pending deliveries (retries, expired leases, deliveries left unleased at fan-out) to
-- $3 for $2 seconds: at most `room` of each endpoint in ($4, $5), $1 in all. First attempts go
-- ahead of retries (a priority lane: a storm of late retries cannot take the whole batch), then
-- endpoints take turns, each one's most overdue first. One index probe per endpoint
-- (deliveries_due_by_endpoint), whatever the backlog of others.
-- Per-key ordering: a delivery with an ordering key is leased only as the head of its (endpoint,
-- key). One behind an earlier open delivery of its key (pending, leased or not, or paused) is
-- parked for $6 seconds instead, and one behind an earlier event of its key not yet fanned out for
-- $7 seconds: each is looked at once per park, not by every claim (one probe of
-- deliveries_open_by_key and one of events_pending_by_key, only for keyed deliveries). When the
-- open one ends, keys_next_due makes the next one due at once. Parked rows are returned with
-- `parked` true and no event columns.
-- Every row this writes (parked or leased) comes from cand, whose set_config (once, an InitPlan)
-- makes the claim commit asynchronously (see hookd/store_hotpath.py).
WITH cand AS (
    SELECT d.*, r.pos
    FROM unnest($4::bigint[], $5::int[]) WITH ORDINALITY AS r (endpoint_id, room, pos)
    CROSS JOIN LATERAL (
        SELECT q.id, q.endpoint_id, q.attempts, q.next_attempt_at,
               CASE WHEN q.ordering_key IS NULL THEN 0
                    WHEN EXISTS (
                        SELECT 1 FROM hookd.deliveries p
                        WHERE p.ordering_key = q.ordering_key AND p.endpoint_id = q.endpoint_id
                          AND p.event_id < q.event_id AND p.state IN ('pending', 'paused')) THEN 2
                    WHEN EXISTS (
                        SELECT 1 FROM hookd.events p
                        WHERE p.ordering_key = q.ordering_key AND p.id < q.event_id
                          AND p.fanned_out_at IS NULL) THEN 1
                    ELSE 0 END AS blocked
        FROM hookd.deliveries q
        WHERE q.state = 'pending' AND q.endpoint_id = r.endpoint_id AND q.next_attempt_at <= now()
        ORDER BY q.next_attempt_at
        LIMIT r.room
        FOR UPDATE SKIP LOCKED
    ) d
    WHERE (SELECT set_config('synchronous_commit', 'off', true)) = 'off'
), due AS (
    -- Round-robin between endpoints: the first of each endpoint, then the second of each, and
    -- so on (a backlog whose due times are all alike, e.g. after a long stop, would otherwise
    -- give the whole batch to the endpoints listed first).
    -- Within a turn, endpoints in the order of ($4, $5): the caller rotates it.
    SELECT id FROM (
        SELECT id, attempts, pos,
               row_number() OVER (PARTITION BY endpoint_id, attempts > 0
                                  ORDER BY next_attempt_at) AS turn
        FROM cand
        WHERE blocked = 0
    ) c
    ORDER BY attempts > 0, turn, pos
    LIMIT $1
), parked AS (
    UPDATE hookd.deliveries d
    SET next_attempt_at = now() + make_interval(secs => CASE WHEN c.blocked = 2 THEN $6::float8 ELSE $7::float8 END)
    FROM cand c
    WHERE d.id = c.id AND d.state = 'pending' AND c.blocked > 0
    RETURNING d.id, d.endpoint_id
), leased AS (
    UPDATE hookd.deliveries d
    SET attempts = d.attempts + 1,
        next_attempt_at = now() + make_interval(secs => $2),
        lease_owner = $3
    FROM due, hookd.events e
    WHERE d.id = due.id AND d.state = 'pending'
      AND e.id = d.event_id AND e.created_at = d.event_created_at
    RETURNING d.id, d.endpoint_id, d.attempts, e.id AS event_id, e.event_type, e.created_at,
              e.payload, d.created_at AS delivery_created_at, d.ordering_key
)
SELECT l.*, false AS parked FROM leased l
UNION ALL
SELECT p.id, p.endpoint_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, true FROM parked p;

-- name: record_outcomes
-- Write back a batch of outcomes. Only rows still leased to $8 at the same attempt count are
-- touched, so a delivery whose lease expired and was taken over is left to its new owner; the one
-- exception is a delivered outcome, applied to any delivery not yet delivered (a 2xx is never
-- thrown away, and nothing is sent after it). `counted` false gives back a lease without an
-- attempt (never sent): the attempt counter and the last status stay as they were. A delivery
-- that would stay pending for an endpoint disabled meanwhile is paused; for an endpoint deleted
-- meanwhile it is failed. Returns the count, and the (endpoint, key) of each delivery with an
-- ordering key that this ended (delivered or failed), for keys_next_due.
-- Open deliveries are looked up in their own partition (`state IN ('pending', 'paused')`); only
-- a delivered outcome that found none there looks among the dead letters (late_upd).
WITH o AS (
    SELECT o.*, ep.id IS NOT NULL AS endpoint_exists, coalesce(ep.enabled, false) AS enabled
    FROM unnest($1::bigint[], $2::int[], $3::text[], $4::float8[], $5::int[], $6::text[], $7::bool[])
        AS o (id, attempts, state, retry_in_s, status, error, counted)
    JOIN hookd.deliveries d0 ON d0.id = o.id AND d0.state IN ('pending', 'paused')
    LEFT JOIN hookd.endpoints ep ON ep.id = d0.endpoint_id
), f AS (
    SELECT o.*,
           CASE WHEN o.state <> 'pending' THEN o.state
                WHEN NOT o.endpoint_exists THEN 'failed'
                WHEN NOT o.enabled THEN 'paused'
                ELSE 'pending' END AS final_state
    FROM o
), upd AS (
    UPDATE hookd.deliveries d
    SET state = f.final_state,
        attempts = CASE WHEN f.counted OR d.lease_owner IS DISTINCT FROM $8 THEN d.attempts
                        ELSE d.attempts - 1 END,
        next_attempt_at = CASE WHEN f.retry_in_s IS NULL THEN d.next_attempt_at
                               ELSE now() + make_interval(secs => f.retry_in_s) END,
        lease_owner = NULL,
        last_status = CASE WHEN f.counted THEN f.status ELSE d.last_status END,
        last_error = CASE WHEN f.final_state = 'failed' AND f.state = 'pending'
                               THEN 'endpoint deleted'
                          WHEN f.counted THEN f.error ELSE d.last_error END,
        finished_at = CASE WHEN f.final_state IN ('delivered', 'failed') THEN now() END
    FROM f
    WHERE d.id = f.id AND d.state IN ('pending', 'paused')
      AND ((d.lease_owner = $8 AND d.attempts = f.attempts) OR f.state = 'delivered')
    RETURNING d.id, d.endpoint_id, d.ordering_key, d.state
), late AS (
    SELECT o.id, o.status FROM unnest($1::bigint[], $3::text[], $5::int[]) AS o (id, state, status)
    WHERE o.state = 'delivered' AND o.id NOT IN (SELECT id FROM f)
), late_upd AS (
    -- A 2xx for a delivery failed meanwhile (its lease expired and another attempt ended it, or
    -- its endpoint was deleted).
    UPDATE hookd.deliveries d
    SET state = 'delivered', lease_owner = NULL, last_status = late.status, last_error = NULL,
        finished_at = now()
    FROM late
    WHERE d.id = late.id AND d.state = 'failed'
    RETURNING d.id, d.endpoint_id, d.ordering_key, d.state
), ended AS (
    SELECT endpoint_id, ordering_key FROM upd
    WHERE ordering_key IS NOT NULL AND state IN ('delivered', 'failed')
)
SELECT (SELECT count(*) FROM upd) + (SELECT count(*) FROM late_upd) AS applied,
       ARRAY(SELECT endpoint_id FROM ended) AS ended_endpoints,
       ARRAY(SELECT ordering_key FROM ended) AS ended_keys;

-- name: keys_next_due
-- After record_outcomes ended deliveries with ordering keys (($1, $2): endpoint, key): the next
-- open delivery of each (endpoint, key), unless someone holds it or it was attempted before
-- (its next_attempt_at is then a backoff), is due now: claim_due may have parked it while the
-- ended one was open. A separate statement on purpose: its snapshot sees a park committed while
-- the outcome was written, and a park still in progress holds the row's lock, so this waits and
-- re-checks the row as parked.
UPDATE hookd.deliveries d
SET next_attempt_at = least(d.next_attempt_at, now())
FROM unnest($1::bigint[], $2::text[]) AS k (endpoint_id, ordering_key)
CROSS JOIN LATERAL (
    SELECT q.id FROM hookd.deliveries q
    WHERE q.ordering_key = k.ordering_key AND q.endpoint_id = k.endpoint_id
      AND q.state IN ('pending', 'paused')
    ORDER BY q.event_id
    LIMIT 1
) h
WHERE d.id = h.id AND d.state = 'pending' AND d.lease_owner IS NULL AND d.attempts = 0;



-- name: record_attempts
INSERT INTO hookd.attempts (delivery_id, attempt, started_at, duration_s, status, error, response_body)
SELECT id, attempt, to_timestamp(started), duration_s, status, error, body
FROM unnest($1::bigint[], $2::int[], $3::float8[], $4::float8[], $5::int[], $6::text[], $7::text[])
    AS a (id, attempt, started, duration_s, status, error, body);

-- name: near_due
-- Pending deliveries that fall due within $1 seconds and are not leased: (id, seconds until due).
SELECT id, extract(epoch FROM next_attempt_at - now())::float8 AS due_in_s
FROM hookd.deliveries
WHERE state = 'pending' AND lease_owner IS NULL
  AND next_attempt_at > now() AND next_attempt_at <= now() + make_interval(secs => $1)
ORDER BY next_attempt_at
LIMIT $2;

-- name: set_breaker
UPDATE hookd.endpoints SET breaker_open_until = $2 WHERE id = $1;

-- name: outbox_waiting
-- Is an event with an id above $1 waiting for fan-out? One probe of events_pending_fanout.
SELECT EXISTS (SELECT 1 FROM hookd.events WHERE fanned_out_at IS NULL AND id > $1);

-- name: install_id
SELECT install_id FROM hookd.meta;

-- name: endpoints_all
SELECT id, url, tenant, event_types, secret, enabled, disabled_reason, settings, created_at,
       breaker_open_until, previous_secret, previous_secret_until, credentials, updated_at,
       description, metadata, payload_filter
FROM hookd.endpoints ORDER BY id;

-- name: endpoint_insert
INSERT INTO hookd.endpoints (url, tenant, event_types, secret, settings, description, metadata,
                             credentials, enabled, disabled_reason, payload_filter)
VALUES ($1, $2, $3, $4, $5, $6, coalesce($7::jsonb, '{}'), $8, coalesce($9, true),
        CASE WHEN NOT coalesce($9, true) THEN 'disabled by operator' END, $10::jsonpath)
RETURNING id, url, tenant, event_types, secret, enabled, disabled_reason, settings, created_at,
          breaker_open_until, previous_secret, previous_secret_until, credentials, updated_at,
          description, metadata, payload_filter;

-- name: endpoint_set_enabled
WITH ep AS (
    UPDATE hookd.endpoints
    SET enabled = $2, disabled_reason = $3, updated_at = now()
    WHERE id = $1
    RETURNING id
), paused AS (
    -- Disabling pauses the endpoint's pending deliveries that nobody holds; enabling resumes them
    -- at once. A delivery leased to a daemon (lease not expired) is left to it: its request may be
    -- in flight, and the daemon writes it back as paused unless it was delivered. Taking it away
    -- would let an enable send it again while the first request is still open.
    UPDATE hookd.deliveries d
    SET state = CASE WHEN $2 THEN 'pending' ELSE 'paused' END,
        next_attempt_at = CASE WHEN $2 THEN now() ELSE d.next_attempt_at END
    FROM ep
    WHERE d.endpoint_id = ep.id AND d.state = CASE WHEN $2 THEN 'paused' ELSE 'pending' END
      AND (d.lease_owner IS NULL OR d.next_attempt_at <= now())
    RETURNING 1
)
SELECT (SELECT count(*) FROM ep) AS found, (SELECT count(*) FROM paused) AS moved;

-- name: endpoint_delete
-- Remove an endpoint (of tenant $2 when given). Its deliveries and attempts stay as history; its
-- open deliveries are settled as failed ("endpoint deleted") in the same transaction.
DELETE FROM hookd.endpoints WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) RETURNING id;

-- name: endpoint_settle_deleted
-- Leased ones too: clearing the lease fences off a retry of an attempt still in flight, so nothing
-- more is sent; a 2xx answer to that attempt still turns the delivery delivered (record_outcomes).
UPDATE hookd.deliveries
SET state = 'failed', last_error = 'endpoint deleted', finished_at = now(), lease_owner = NULL
WHERE endpoint_id = $1 AND state IN ('pending', 'paused');

-- name: endpoint_rotate_secret
-- The current secret becomes the previous one, valid until now() + $3 seconds.
UPDATE hookd.endpoints
SET previous_secret = secret, previous_secret_until = now() + make_interval(secs => $3),
    secret = $2, updated_at = now()
WHERE id = $1
RETURNING id;

-- name: endpoint_set_credentials
UPDATE hookd.endpoints SET credentials = $2, updated_at = now() WHERE id = $1 RETURNING id;

-- name: endpoint_set_url
UPDATE hookd.endpoints SET url = $2, updated_at = now() WHERE id = $1 RETURNING id;

-- name: endpoint_set_settings
UPDATE hookd.endpoints SET settings = $2, updated_at = now() WHERE id = $1 RETURNING id;

-- name: retry_failed
-- Put dead-lettered deliveries back in the queue (one more attempt each; the attempt counter keeps
-- counting): by ids, by endpoint, and/or by creation time.
UPDATE hookd.deliveries
SET state = 'pending', next_attempt_at = now(), finished_at = NULL, lease_owner = NULL
WHERE state = 'failed'
  AND ($1::bigint[] IS NULL OR id = ANY ($1))
  AND ($2::bigint IS NULL OR endpoint_id = $2)
  AND ($3::timestamptz IS NULL OR created_at >= $3)
  AND ($4::timestamptz IS NULL OR created_at < $4)
RETURNING id;

-- name: status_counts
-- The figures read every few seconds (metrics, `hookd status`), cheap at any backlog: each count
-- reads at most $1 + 1 entries of a partial index; a count above $1 is the planner's estimate
-- instead (hookd.row_estimate, never below $1 + 1) and is named in `estimated`. The oldest
-- pending delivery is one probe of deliveries_pending_age. Failed attempts of the last hour only
-- when $2 (that reads the hour's attempts; the daemon's metrics do not need it).
-- MATERIALIZED: inlined, every reference to a count below would run its subquery again. Each
-- capped scan is ordered by its partial index's column (deliveries_pending_age,
-- deliveries_paused_failed): for a state the statistics say is empty, the planner would otherwise
-- pick a sequential scan that stops at the first row, and read the whole table when there is none.
WITH c AS MATERIALIZED (
    SELECT
        (SELECT count(*) FROM (SELECT FROM hookd.events WHERE fanned_out_at IS NULL
                               ORDER BY id LIMIT $1 + 1) s) AS outbox_backlog,
        (SELECT count(*) FROM (SELECT FROM hookd.deliveries WHERE state = 'pending'
                               ORDER BY created_at LIMIT $1 + 1) s) AS pending,
        (SELECT count(*) FROM (SELECT FROM hookd.deliveries WHERE state = 'paused'
                               ORDER BY state LIMIT $1 + 1) s) AS paused,
        (SELECT count(*) FROM (SELECT FROM hookd.deliveries WHERE state = 'failed'
                               ORDER BY state LIMIT $1 + 1) s) AS failed
)
SELECT
    CASE WHEN c.outbox_backlog > $1 THEN greatest($1 + 1, hookd.row_estimate(
        'SELECT FROM hookd.events WHERE fanned_out_at IS NULL')) ELSE c.outbox_backlog END
        AS outbox_backlog,
    CASE WHEN c.pending > $1 THEN greatest($1 + 1, hookd.row_estimate(
        'SELECT FROM hookd.deliveries WHERE state = ''pending''')) ELSE c.pending END AS pending,
    CASE WHEN c.paused > $1 THEN greatest($1 + 1, hookd.row_estimate(
        'SELECT FROM hookd.deliveries WHERE state = ''paused''')) ELSE c.paused END AS paused,
    CASE WHEN c.failed > $1 THEN greatest($1 + 1, hookd.row_estimate(
        'SELECT FROM hookd.deliveries WHERE state = ''failed''')) ELSE c.failed END AS failed,
    array_remove(ARRAY[
        CASE WHEN c.outbox_backlog > $1 THEN 'outbox_backlog' END,
        CASE WHEN c.pending > $1 THEN 'pending' END,
        CASE WHEN c.paused > $1 THEN 'paused' END,
        CASE WHEN c.failed > $1 THEN 'failed' END], NULL) AS estimated,
    (SELECT extract(epoch FROM now() - min(created_at))::float8
       FROM hookd.deliveries WHERE state = 'pending') AS oldest_pending_s,
    CASE WHEN $2::bool THEN (SELECT count(*) FROM hookd.attempts
       WHERE started_at > now() - interval '1 hour'
         AND (status IS NULL OR status NOT BETWEEN 200 AND 299)) END AS failed_attempts_last_hour,
    (SELECT count(*) FROM hookd.endpoints WHERE NOT enabled) AS disabled_endpoints,
    (SELECT count(*) FROM hookd.endpoints WHERE breaker_open_until IS NOT NULL) AS open_breakers
FROM c;

-- name: status_counts_exact
-- Every figure of status_counts counted exactly (`hookd status --exact`): each count reads the
-- whole of its partial index (tens of ms per 100,000 entries).
SELECT
    (SELECT count(*) FROM hookd.events WHERE fanned_out_at IS NULL) AS outbox_backlog,
    (SELECT count(*) FROM hookd.deliveries WHERE state = 'pending') AS pending,
    (SELECT count(*) FROM hookd.deliveries WHERE state = 'paused') AS paused,
    (SELECT count(*) FROM hookd.deliveries WHERE state = 'failed') AS failed,
    '{}'::text[] AS estimated,
    (SELECT extract(epoch FROM now() - min(created_at))::float8
       FROM hookd.deliveries WHERE state = 'pending') AS oldest_pending_s,
    (SELECT count(*) FROM hookd.attempts
       WHERE started_at > now() - interval '1 hour'
         AND (status IS NULL OR status NOT BETWEEN 200 AND 299)) AS failed_attempts_last_hour,
    (SELECT count(*) FROM hookd.endpoints WHERE NOT enabled) AS disabled_endpoints,
    (SELECT count(*) FROM hookd.endpoints WHERE breaker_open_until IS NOT NULL) AS open_breakers;

-- Operating surface (hookd/service.py). Lists page newest first: `id < $before` and LIMIT one
-- more than the page, so the caller knows whether a next page exists. A tenant scope ($scope not
-- NULL) sees that tenant's endpoints and events, and the deliveries of that tenant's events
-- (fan-out matches endpoint tenant to event tenant, so they are its endpoints' deliveries too, and
-- they stay visible after the endpoint is deleted).

-- name: endpoint_get
-- $1 id, $2 scope tenant.
SELECT id, url, tenant, event_types, secret, enabled, disabled_reason, settings, created_at,
       breaker_open_until, previous_secret, previous_secret_until, credentials, updated_at,
       description, metadata, payload_filter
FROM hookd.endpoints
WHERE id = $1 AND ($2::text IS NULL OR tenant = $2);

-- name: endpoints_page
-- $1 scope tenant, $2 before id, $3 limit.
SELECT id, url, tenant, event_types, secret, enabled, disabled_reason, settings, created_at,
       breaker_open_until, previous_secret, previous_secret_until, credentials, updated_at,
       description, metadata, payload_filter
FROM hookd.endpoints
WHERE ($1::text IS NULL OR tenant = $1) AND ($2::bigint IS NULL OR id < $2)
ORDER BY id DESC
LIMIT $3;

-- name: endpoint_update
-- PATCH an endpoint ($1) of scope tenant $2 with the fields present in the jsonb object $3: url,
-- event_types (array), tenant, description, payload_filter (null clears them), metadata
-- (replaces), settings (merged into the overrides) and settings_unset (keys removed from them).
-- $4 true replaces the credentials with $5 (sealed text, NULL for none).
UPDATE hookd.endpoints
SET url = CASE WHEN $3::jsonb ? 'url' THEN $3->>'url' ELSE url END,
    event_types = CASE WHEN $3 ? 'event_types'
                       THEN ARRAY(SELECT jsonb_array_elements_text($3->'event_types'))
                       ELSE event_types END,
    tenant = CASE WHEN $3 ? 'tenant' THEN $3->>'tenant' ELSE tenant END,
    description = CASE WHEN $3 ? 'description' THEN $3->>'description' ELSE description END,
    metadata = CASE WHEN $3 ? 'metadata' THEN $3->'metadata' ELSE metadata END,
    payload_filter = CASE WHEN $3 ? 'payload_filter' THEN ($3->>'payload_filter')::jsonpath
                          ELSE payload_filter END,
    settings = (settings || coalesce($3->'settings', '{}'))
               - ARRAY(SELECT jsonb_array_elements_text(coalesce($3->'settings_unset', '[]'))),
    credentials = CASE WHEN $4::bool THEN $5::text ELSE credentials END,
    updated_at = now()
WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)
RETURNING id;

-- name: event_get
-- $1 id, $2 scope tenant.
SELECT id, event_type, tenant, payload, idempotency_key, created_at, fanned_out_at
FROM hookd.events
WHERE id = $1 AND ($2::text IS NULL OR tenant = $2);

-- name: events_page
-- $1 scope tenant, $2 before id, $3 limit, $4 event type, $5 tenant, $6 since, $7 until
-- (created_at, until exclusive). Served by the primary key, events_by_type or events_by_tenant.
SELECT id, event_type, tenant, payload, idempotency_key, created_at, fanned_out_at
FROM hookd.events
WHERE ($1::text IS NULL OR tenant = $1)
  AND ($2::bigint IS NULL OR id < $2)
  AND ($4::text IS NULL OR event_type = $4)
  AND ($5::text IS NULL OR tenant = $5)
  AND ($6::timestamptz IS NULL OR created_at >= $6)
  AND ($7::timestamptz IS NULL OR created_at < $7)
ORDER BY id DESC
LIMIT $3;

-- name: event_types_seen
-- Distinct event types of the outbox (of scope tenant $1), sorted: a loose index scan over
-- events_by_type, one index probe per type instead of a scan of every event.
WITH RECURSIVE t (event_type) AS (
    (SELECT event_type FROM hookd.events
     WHERE $1::text IS NULL OR tenant = $1
     ORDER BY event_type LIMIT 1)
    UNION ALL
    SELECT (SELECT e.event_type FROM hookd.events e
            WHERE e.event_type > t.event_type AND ($1::text IS NULL OR e.tenant = $1)
            ORDER BY e.event_type LIMIT 1)
    FROM t
    WHERE t.event_type IS NOT NULL
)
SELECT event_type FROM t WHERE event_type IS NOT NULL;

-- name: deliveries_page
-- $1 scope tenant, $2 before id, $3 limit, $4 endpoint, $5 event, $6 state, $7 since, $8 until
-- (created_at, until exclusive), $9 ids. `leased_until` is the lease's expiry while a daemon holds
-- a pending delivery; `next_attempt_at` is shown for pending deliveries only.
SELECT d.id, d.event_id, d.endpoint_id, e.event_type, e.tenant, d.state, d.attempts,
       CASE WHEN d.state = 'pending' THEN d.next_attempt_at END AS next_attempt_at,
       CASE WHEN d.state = 'pending' AND d.lease_owner IS NOT NULL AND d.next_attempt_at > now()
            THEN d.next_attempt_at END AS leased_until,
       d.last_status, d.last_error, d.created_at, d.finished_at
FROM hookd.deliveries d
JOIN hookd.events e ON e.id = d.event_id AND e.created_at = d.event_created_at
WHERE ($1::text IS NULL OR e.tenant = $1)
  AND ($2::bigint IS NULL OR d.id < $2)
  AND ($4::bigint IS NULL OR d.endpoint_id = $4)
  AND ($5::bigint IS NULL OR d.event_id = $5)
  AND ($6::text IS NULL OR d.state = $6)
  AND ($7::timestamptz IS NULL OR d.created_at >= $7)
  AND ($8::timestamptz IS NULL OR d.created_at < $8)
  AND ($9::bigint[] IS NULL OR d.id = ANY ($9))
ORDER BY d.id DESC
LIMIT $3;

-- name: attempts_of
-- The attempt log of delivery $1, oldest first.
SELECT delivery_id, attempt, started_at, duration_s, status, error, response_body
FROM hookd.attempts
WHERE delivery_id = $1
ORDER BY attempt, started_at;

-- name: endpoint_stats
-- Attempts of endpoint $1's deliveries over the last hour and day (attempts_started, then each
-- attempt's delivery by primary key), and its newest attempt: from the last day, or else the
-- newest attempt of its newest attempted delivery (deliveries_by_endpoint).
WITH a AS (
    SELECT a.started_at, a.duration_s, a.status, a.error,
           a.started_at > now() - interval '1 hour' AS in_hour,
           a.status BETWEEN 200 AND 299 AS ok
    FROM hookd.attempts a
    JOIN hookd.deliveries d ON d.id = a.delivery_id
    WHERE a.started_at > now() - interval '1 day' AND d.endpoint_id = $1
), recent AS (
    SELECT started_at, status, error FROM a ORDER BY started_at DESC LIMIT 1
), older AS (
    SELECT la.started_at, la.status, la.error
    FROM (SELECT id FROM hookd.deliveries
          WHERE endpoint_id = $1 AND attempts > 0
          ORDER BY id DESC LIMIT 1) d
    CROSS JOIN LATERAL (SELECT started_at, status, error FROM hookd.attempts
                        WHERE delivery_id = d.id ORDER BY started_at DESC LIMIT 1) la
    WHERE NOT EXISTS (SELECT 1 FROM recent)
), newest AS (
    SELECT * FROM recent UNION ALL SELECT * FROM older
), agg AS (
    SELECT count(*) FILTER (WHERE in_hour) AS hour_attempts,
           count(*) FILTER (WHERE in_hour AND ok) AS hour_succeeded,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_s) FILTER (WHERE in_hour)
               AS hour_p50_s,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_s) FILTER (WHERE in_hour)
               AS hour_p99_s,
           count(*) AS day_attempts,
           count(*) FILTER (WHERE ok) AS day_succeeded,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_s) AS day_p50_s,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_s) AS day_p99_s
    FROM a
)
SELECT agg.*, newest.started_at AS last_attempt_at, newest.status AS last_status,
       newest.error AS last_error
FROM agg LEFT JOIN newest ON true;

-- name: deliveries_requeue
-- Retry, resend and replay in one statement, so the count is exact: deliveries in states $3
-- matching every given condition ($1 ids, $2 endpoint, $4 event type, $5/$6 created at or after /
-- before, $7 scope tenant) get another attempt: pending and due now (finished_at and the lease
-- cleared; the attempt counter keeps counting), or paused if their endpoint is disabled (they go
-- out on enable). Deliveries of deleted endpoints are left alone. With $8 (dry run) nothing
-- changes and the same selection is counted. A selection naming neither ids nor an event type
-- leaves test events (hookd.ping, attempted once: hookd/outcome.py) alone. Returns the count, how
-- many of it were paused, and the first 1,000 ids.
WITH sel AS (
    SELECT d.id, ep.enabled
    FROM hookd.deliveries d
    JOIN hookd.events e ON e.id = d.event_id AND e.created_at = d.event_created_at
    JOIN hookd.endpoints ep ON ep.id = d.endpoint_id
    WHERE d.state = ANY ($3::text[])
      AND ($1::bigint[] IS NULL OR d.id = ANY ($1))
      AND ($2::bigint IS NULL OR d.endpoint_id = $2)
      AND ($4::text IS NULL OR e.event_type = $4)
      AND ($1::bigint[] IS NOT NULL OR $4::text IS NOT NULL OR e.event_type <> 'hookd.ping')
      AND ($5::timestamptz IS NULL OR d.created_at >= $5)
      AND ($6::timestamptz IS NULL OR d.created_at < $6)
      AND ($7::text IS NULL OR e.tenant = $7)
), upd AS (
    UPDATE hookd.deliveries d
    SET state = CASE WHEN sel.enabled THEN 'pending' ELSE 'paused' END,
        next_attempt_at = now(), finished_at = NULL, lease_owner = NULL
    FROM sel
    WHERE NOT $8::bool AND d.id = sel.id AND d.state = ANY ($3::text[])
    RETURNING d.id, d.state = 'paused' AS paused
), done AS (
    SELECT id, paused FROM upd
    UNION ALL
    SELECT id, NOT enabled FROM sel WHERE $8::bool
)
SELECT count(*) AS count, count(*) FILTER (WHERE paused) AS paused,
       ARRAY(SELECT id FROM done ORDER BY id LIMIT 1000) AS ids
FROM done;

-- name: test_delivery_insert
-- A test event ($1 type, $2 payload) for enabled endpoint $3 of scope tenant $4, and its one
-- delivery, pending and due now. The event carries the endpoint's tenant and is marked fanned out,
-- so fan-out never gives it to another endpoint. No row: the endpoint is gone or disabled.
WITH ep AS (
    SELECT id, tenant FROM hookd.endpoints
    WHERE id = $3 AND enabled AND ($4::text IS NULL OR tenant = $4)
), ev AS (
    INSERT INTO hookd.events (event_type, tenant, payload, fanned_out_at)
    SELECT $1, ep.tenant, $2::jsonb, now() FROM ep
    RETURNING id, created_at
)
INSERT INTO hookd.deliveries (event_id, endpoint_id, event_created_at)
SELECT ev.id, ep.id, ev.created_at FROM ev, ep
RETURNING id, event_id;

-- name: attempt_first
SELECT delivery_id, attempt, started_at, duration_s, status, error, response_body
FROM hookd.attempts
WHERE delivery_id = $1
ORDER BY attempt, started_at
LIMIT 1;

-- name: notify_due
-- Wake running daemons for deliveries made due now (hookd/listener.py: the "due" payload).
SELECT pg_notify('hookd_wake', 'due');

-- name: leases_held
-- Pending deliveries leased by a daemon whose lease has not expired, and when the last one
-- expires (after a kill -9 they wait until then). Reads deliveries_due_by_endpoint.
SELECT count(*) AS leased, max(next_attempt_at) AS expire_by
FROM hookd.deliveries
WHERE state = 'pending' AND lease_owner IS NOT NULL AND next_attempt_at > now();

-- name: failed_attempts_by_endpoint
-- Failed attempts (no answer or not 2xx) of the last hour, per endpoint (attempts_started).
SELECT d.endpoint_id, count(*) AS failed
FROM hookd.attempts a
JOIN hookd.deliveries d ON d.id = a.delivery_id
WHERE a.started_at > now() - interval '1 hour'
  AND (a.status IS NULL OR a.status NOT BETWEEN 200 AND 299)
GROUP BY d.endpoint_id;

-- name: payload_filter_check
-- A payload filter as PostgreSQL reads it ($1 cast to jsonpath: syntax, regular expressions) and
-- its canonical text; evaluated once, not silently, on an empty object so that a path that is not
-- a predicate (SQLSTATE 22038: `$.total` rather than `$.total > 100`) or names a variable it is
-- never given (42704) is refused now rather than matching nothing at fan-out.
SELECT $1::jsonpath::text AS canonical, jsonb_path_match('{}'::jsonb, $1::jsonpath) AS on_empty;

-- The event catalogue (hookd/sql/021_event_catalogue.sql).

-- name: catalogue_all
SELECT name, description, schema, example, created_at, updated_at
FROM hookd.event_types
ORDER BY name;

-- name: catalogue_get
SELECT name, description, schema, example, created_at, updated_at
FROM hookd.event_types
WHERE name = $1;

-- name: catalogue_put
-- Add event type $1, or replace its description $2, schema $3 and example $4 (jsonb text, NULL
-- for none) if it is still as the caller read it: $5 is the updated_at read (NULL: it did not
-- exist). A row changed meanwhile is left alone and no row comes back, so a schema and example
-- checked together are stored together. `created` tells an insert from an update.
INSERT INTO hookd.event_types AS t (name, description, schema, example)
VALUES ($1, $2, $3::jsonb, $4::jsonb)
ON CONFLICT (name) DO UPDATE
SET description = EXCLUDED.description, schema = EXCLUDED.schema, example = EXCLUDED.example,
    updated_at = now()
WHERE t.updated_at = $5::timestamptz
RETURNING name, description, schema, example, created_at, updated_at, (xmax = 0) AS created;

-- name: catalogue_remove
DELETE FROM hookd.event_types WHERE name = $1 RETURNING name;

-- name: strict_types_get
-- Strict mode is on while its trigger exists (the catalogs are readable by every role).
SELECT EXISTS (SELECT 1 FROM pg_trigger
               WHERE tgrelid = 'hookd.events'::regclass AND tgname = 'events_known_type');

-- name: strict_types_set
SELECT hookd.set_strict_event_types($1);

-- Capture (hookd capture ...): the DDL is built by hookd.capture_ddl / hookd.capture_drop_ddl
-- (hookd/sql/010_capture_ordering.sql), inside PostgreSQL, which quotes every identifier.

-- name: capture_ddl
SELECT hookd.capture_ddl(table_name => $1, events => $2, columns => $3, type_prefix => $4,
                         status_column => $5, tenant_column => $6, key_column => $7);

-- name: capture_drop_ddl
SELECT hookd.capture_drop_ddl($1);

-- name: captures_list
-- Every captured table (or only table $1), with its current name (the recorded one if it was
-- dropped since) and the captured columns it no longer has (capture add must run again).
SELECT CASE WHEN cl.oid IS NULL THEN c.table_name ELSE format('%I.%I', n.nspname, cl.relname) END
           AS table_name,
       cl.oid IS NOT NULL AS table_exists, c.events, c.columns, c.type_prefix, c.key_column,
       c.status_column, c.tenant_column, c.function_name, c.created_at,
       ARRAY(SELECT col FROM unnest(c.columns || c.tenant_column) AS col
             WHERE col IS NOT NULL AND NOT EXISTS (
                 SELECT 1 FROM pg_attribute a
                 WHERE a.attrelid = c.relid AND a.attname = col AND a.attnum > 0
                   AND NOT a.attisdropped)) AS missing_columns
FROM hookd.captures c
LEFT JOIN pg_class cl ON cl.oid = c.relid
LEFT JOIN pg_namespace n ON n.oid = cl.relnamespace
WHERE $1::text IS NULL OR c.relid = to_regclass($1)
ORDER BY 1;

-- name: history_prepare_next
-- Retention, step 1 (hookd/store_retention.py; the functions are in 031_partitioned_history.sql),
-- repeated until it returns NULL: the next missing partition for the UTC days of $1 (NULL:
-- now()) and $2 more.
SELECT hookd.history_prepare_next(coalesce($1::timestamptz, now()), $2) AS name;

-- name: history_clean_defaults
-- Step 2: rows of the default partitions past retention at $1; $2 / $3 seconds of delivered
-- history / dead letters to keep (NULL: forever).
SELECT relation, row_count
FROM hookd.history_clean_defaults(coalesce($1::timestamptz, now()),
                                  make_interval(secs => $2::float8),
                                  make_interval(secs => $3::float8))
WHERE row_count > 0;

-- name: history_drop_next
-- Step 3, repeated until it returns no row: the oldest day partition past retention.
SELECT relation, row_count
FROM hookd.history_drop_next(coalesce($1::timestamptz, now()), make_interval(secs => $2::float8),
                             make_interval(secs => $3::float8));

-- name: history_partitions
-- The partitions of the history tables: parent, name, upper bound (NULL for a default
-- partition), bytes (table, TOAST and indexes), and the planner's row estimate.
SELECT pc.relname AS parent, c.relname AS name,
       hookd.history_bound(c.oid::regclass) AS upper_bound,
       pg_total_relation_size(c.oid) AS bytes, greatest(c.reltuples, 0)::bigint AS rows_estimate
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class pc ON pc.oid = i.inhparent
WHERE pc.relnamespace = 'hookd'::regnamespace AND c.relkind = 'r'
  AND pc.relname IN ('events', 'deliveries', 'deliveries_delivered', 'deliveries_failed', 'attempts')
ORDER BY pc.relname, hookd.history_bound(c.oid::regclass) NULLS LAST, c.relname;
