-- hookd schema, version 1: the outbox, endpoints, deliveries and their attempts.
-- Applied by `hookd migrate` inside one transaction under an advisory lock.

CREATE SCHEMA IF NOT EXISTS hookd;

-- One row: facts about this installation.
CREATE TABLE hookd.meta (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Prefix of every webhook-id, so ids stay unique across reinstalls of the schema.
    install_id text NOT NULL DEFAULT substr(md5(random()::text || clock_timestamp()::text), 1, 10)
);
INSERT INTO hookd.meta DEFAULT VALUES;

-- One row: whether a daemon is asleep and wants a NOTIFY. Publishers only read it; only daemons write it.
-- NOTIFY serialises commits (docs/design-notes.md item 1), so publishers notify only while this says so.
CREATE TABLE hookd.waker (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    sleeping boolean NOT NULL DEFAULT true
);
INSERT INTO hookd.waker DEFAULT VALUES;

CREATE TABLE hookd.endpoints (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url text NOT NULL,
    tenant text,
    -- Filter: exact event types, 'prefix.*' globs, or '*'.
    event_types text[] NOT NULL DEFAULT '{*}',
    secret text NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    disabled_reason text,
    -- Per-endpoint overrides of delivery settings (timeouts, limits, retry schedule).
    settings jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The outbox. Rows are written by hookd.publish() in the application's transaction.
CREATE TABLE hookd.events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_type text NOT NULL,
    tenant text,
    payload jsonb NOT NULL,
    idempotency_key text,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Set when the daemon has created this event's deliveries.
    fanned_out_at timestamptz
);
-- The claim query reads only this partial index, so a large history does not slow it down.
CREATE INDEX events_pending_fanout ON hookd.events (id) WHERE fanned_out_at IS NULL;
CREATE UNIQUE INDEX events_idempotency ON hookd.events ((coalesce(tenant, '')), idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- One row per (event, endpoint). No foreign key to endpoints: deleting an endpoint keeps its
-- history, and the daemon settles what is left for it.
CREATE TABLE hookd.deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id bigint NOT NULL REFERENCES hookd.events (id),
    endpoint_id bigint NOT NULL,
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'failed', 'paused')),
    -- Attempts started; incremented when a daemon leases the delivery, so it always advances.
    attempts integer NOT NULL DEFAULT 0,
    -- For a pending delivery: when it may be claimed. While leased: when the lease expires.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner uuid,
    last_status integer,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX deliveries_due ON hookd.deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_open_by_endpoint ON hookd.deliveries (endpoint_id)
    WHERE state IN ('pending', 'paused', 'failed');

-- The attempt log: one row per HTTP attempt.
CREATE TABLE hookd.attempts (
    delivery_id bigint NOT NULL,
    attempt integer NOT NULL,
    started_at timestamptz NOT NULL,
    duration_s double precision NOT NULL,
    status integer,
    error text,
    response_body text
);
CREATE INDEX attempts_delivery ON hookd.attempts (delivery_id);
CREATE INDEX attempts_started ON hookd.attempts (started_at);

-- Does an endpoint filter accept an event type? Exact names, 'prefix.*' (any type starting with
-- 'prefix.'), or '*'.
CREATE FUNCTION hookd.filter_matches(filter text[], event_type text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT event_type = ANY (filter)
        OR EXISTS (
            SELECT 1 FROM unnest(filter) AS f
            WHERE f = '*' OR (f LIKE '%.*' AND starts_with(event_type, left(f, -1)))
        )
$$;

-- Publish one event inside the caller's transaction; returns the event id.
-- Errors (SQLSTATE 22023 invalid_parameter_value) abort the caller's statement; nothing is stored.
CREATE FUNCTION hookd.publish(
    event_type text,
    payload jsonb,
    tenant text DEFAULT NULL,
    idempotency_key text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    IF event_type IS NULL OR length(event_type) > 200
       OR event_type !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' THEN
        RAISE EXCEPTION 'hookd.publish: invalid event_type %', quote_nullable(left(event_type, 210))
            USING ERRCODE = '22023',
                  HINT = 'Use 1-200 characters: dot-separated words of letters, digits, _ and -, e.g. order.paid.';
    END IF;
    IF payload IS NULL THEN
        RAISE EXCEPTION 'hookd.publish: payload must not be NULL' USING ERRCODE = '22023';
    END IF;
    IF pg_column_size(payload) > 262144 THEN
        RAISE EXCEPTION 'hookd.publish: payload is % bytes, over the 262144-byte cap', pg_column_size(payload)
            USING ERRCODE = '22023';
    END IF;
    IF length(tenant) > 200 OR tenant = '' THEN
        RAISE EXCEPTION 'hookd.publish: tenant must be 1-200 characters' USING ERRCODE = '22023';
    END IF;

    IF idempotency_key IS NULL THEN
        INSERT INTO hookd.events (event_type, tenant, payload)
        VALUES (publish.event_type, publish.tenant, publish.payload)
        RETURNING id INTO new_id;
    ELSE
        IF length(idempotency_key) > 200 OR idempotency_key = '' THEN
            RAISE EXCEPTION 'hookd.publish: idempotency_key must be 1-200 characters' USING ERRCODE = '22023';
        END IF;
        INSERT INTO hookd.events (event_type, tenant, payload, idempotency_key)
        VALUES (publish.event_type, publish.tenant, publish.payload, publish.idempotency_key)
        ON CONFLICT ((coalesce(tenant, '')), idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING id INTO new_id;
        IF new_id IS NULL THEN
            SELECT e.id INTO new_id FROM hookd.events e
            WHERE coalesce(e.tenant, '') = coalesce(publish.tenant, '')
              AND e.idempotency_key = publish.idempotency_key;
            RETURN new_id;
        END IF;
    END IF;

    -- Wake a sleeping daemon. Only then: a NOTIFY takes a global lock at commit.
    IF (SELECT sleeping FROM hookd.waker) THEN
        PERFORM pg_notify('hookd_wake', '');
    END IF;
    RETURN new_id;
END
$$;
