-- hookd schema, version 31: history in partitions, so retention drops whole tables instead of
-- deleting rows (no bloat, no vacuum debt), and the daemon's queries touch only what is open.
--
-- Layout (docs/retention.md has the design and the upgrade):
--   hookd.events       RANGE (created_at): one partition per UTC day, plus a default.
--   hookd.deliveries   LIST (state):
--     deliveries_open       'pending', 'paused': all open work, whatever its age; never dropped.
--     deliveries_delivered  'delivered', RANGE (event_created_at): a partition per day + default.
--     deliveries_failed     'failed' (dead letters), RANGE (event_created_at): the same.
--   hookd.attempts     RANGE (started_at): a partition per day, plus a default.
-- A delivery moves between partitions when its state changes (PostgreSQL moves the row on
-- UPDATE). Deliveries carry their event's created_at, so an event and its finished deliveries
-- sit in partitions of the same day and age out together.
-- Idempotency keys move to their own table: a unique index on a partitioned table must include
-- the partition key, and a key must be unique across days.
--
-- The upgrade copies every row into the new tables (one transaction: publishing waits for it).
-- History from before the upgrade lands in one partition per table that ends where today's
-- begins (its name says "before"); it ages out whole, like a day.

-- -- partition management ------------------------------------------------------------------
-- Three kinds of short transactions (hookd/store_retention.py calls them in turn), so no lock
-- is held long and none is held while another is awaited: history_prepare_next (one partition
-- ahead, called until none is missing), history_clean_defaults (what the default partitions hold
-- past retention), history_drop_next (one day partition past its retention, called until it
-- finds none). Each runs as the schema's owner (only a table's
-- owner may add or drop its partitions) and takes the advisory lock MAINTENANCE_LOCK_KEY of
-- hookd/retention.py, so
-- daemons run them one at a time; lock_timeout bounds every wait (SQLSTATE 55P03: try later).

-- The upper bound of range partition `part` (from PostgreSQL's own text of it: FOR VALUES FROM
-- (…) TO ('…')); NULL for a default partition.
CREATE FUNCTION hookd.history_bound(part regclass) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz
    FROM pg_class c WHERE c.oid = part
$$;

-- Create the partition of `parent` (a table partitioned by RANGE on `key`) for the UTC day
-- `day`, unless it exists; returns whether it did. Rows the default partition holds for that day
-- (written while no partition for it existed) move into it first.
-- Locks: a day that may be receiving rows now (it starts within a day) is made under an ACCESS
-- EXCLUSIVE lock on the parent, held to the end of the transaction: a concurrent insert routed to
-- the default partition before the attach would otherwise fail its partition check after it.
-- A later day is attached with only SHARE UPDATE EXCLUSIVE on the parent (writes go on).
CREATE FUNCTION hookd.history_partition_create(parent text, key text, day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := parent || '_' || to_char(day, 'YYYYMMDD');
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(format('hookd.%I', part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    IF lo < now() + interval '1 day' THEN
        EXECUTE format('LOCK TABLE hookd.%I IN ACCESS EXCLUSIVE MODE', parent);
    END IF;
    EXECUTE format('CREATE TABLE hookd.%I (LIKE hookd.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   part, parent);
    EXECUTE format('WITH moved AS (DELETE FROM hookd.%I WHERE %I >= $1 AND %I < $2 RETURNING *) '
                   'INSERT INTO hookd.%I SELECT * FROM moved',
                   parent || '_default', key, key, part) USING lo, hi;
    -- A CHECK of the bounds spares ATTACH its validating scan of the new table.
    EXECUTE format('ALTER TABLE hookd.%I ADD CONSTRAINT %I CHECK (%I >= %L AND %I < %L)',
                   part, part || '_bounds', key, lo, key, hi);
    EXECUTE format('ALTER TABLE hookd.%I ATTACH PARTITION hookd.%I FOR VALUES FROM (%L) TO (%L)',
                   parent, part, lo, hi);
    EXECUTE format('ALTER TABLE hookd.%I DROP CONSTRAINT %I', part, part || '_bounds');
    RETURN true;
END
$$;

-- Create the first missing partition for the UTC days from `at`'s to `ahead` days later; its
-- name, or NULL when none is missing. One per call (and transaction): a creation locks the
-- parent's default partition until commit, and a reader of several history tables could
-- otherwise hold one default while waiting for another that this holds.
CREATE FUNCTION hookd.history_prepare_next(at timestamptz, ahead integer) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '1s'
AS $$
DECLARE
    today date := (at AT TIME ZONE 'UTC')::date;
    parent text;
BEGIN
    PERFORM pg_advisory_xact_lock(114827819967586);
    FOR i IN 0..ahead LOOP
        FOREACH parent IN ARRAY ARRAY['events', 'deliveries_delivered', 'deliveries_failed', 'attempts'] LOOP
            IF hookd.history_partition_create(parent, CASE parent
                    WHEN 'events' THEN 'created_at' WHEN 'attempts' THEN 'started_at'
                    ELSE 'event_created_at' END, today + i) THEN
                RETURN parent || '_' || to_char(today + i, 'YYYYMMDD');
            END IF;
        END LOOP;
    END LOOP;
    RETURN NULL;
END
$$;

-- Delete what the default partitions hold past its retention at `at` (rows kept across the drop
-- of their day, or written while no partition existed for it), by the rules of
-- history_drop_next; NULL keeps forever. Returns (default partition, rows deleted) for each
-- that lost rows.
CREATE FUNCTION hookd.history_clean_defaults(
    at timestamptz, delivered_keep interval, dead_letter_keep interval
) RETURNS TABLE (relation text, row_count bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '1s'
AS $$
DECLARE
    drop_before timestamptz := at - delivered_keep;
    dead_before timestamptz := at - dead_letter_keep;
BEGIN
    PERFORM pg_advisory_xact_lock(114827819967586);
    DELETE FROM hookd.deliveries_delivered_default WHERE event_created_at < drop_before;
    GET DIAGNOSTICS row_count = ROW_COUNT;
    relation := 'deliveries_delivered_default'; RETURN NEXT;
    DELETE FROM hookd.deliveries_failed_default WHERE event_created_at < dead_before;
    GET DIAGNOSTICS row_count = ROW_COUNT;
    relation := 'deliveries_failed_default'; RETURN NEXT;
    DELETE FROM hookd.attempts_default p WHERE p.started_at < drop_before
        AND NOT EXISTS (SELECT 1 FROM hookd.deliveries_open o WHERE o.id = p.delivery_id)
        AND NOT EXISTS (SELECT 1 FROM hookd.deliveries_failed f WHERE f.id = p.delivery_id);
    GET DIAGNOSTICS row_count = ROW_COUNT;
    relation := 'attempts_default'; RETURN NEXT;
    DELETE FROM hookd.events_default p WHERE p.created_at < drop_before
        AND p.fanned_out_at IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM hookd.deliveries_open o WHERE o.event_id = p.id)
        AND NOT EXISTS (SELECT 1 FROM hookd.deliveries_failed f WHERE f.event_id = p.id);
    GET DIAGNOSTICS row_count = ROW_COUNT;
    relation := 'events_default'; RETURN NEXT;
    DELETE FROM hookd.idempotency_keys WHERE created_at < drop_before;
    GET DIAGNOSTICS row_count = ROW_COUNT;
    relation := 'idempotency_keys'; RETURN NEXT;
END
$$;

-- Drop the oldest day partition past its retention at `at`, if any: events, delivered
-- deliveries and attempts of days that ended `delivered_keep` before `at`, dead letters of days
-- that ended `dead_letter_keep` before it (NULL: never). Rows still needed are first copied back
-- into the parent, where they land in its default partition with their ids and times: events
-- not fanned out yet or with an open delivery or a dead letter, and the attempts of open
-- deliveries and dead letters. Open deliveries have a partition of their own, never dropped.
-- Returns (partition, rows kept), or no row when nothing is due.
-- Locks: ACCESS EXCLUSIVE on the partition's parent, taken first (no deadlock with a writer
-- that holds the parent and waits for the partition) and held for the copy, which reads the
-- partition by index from the (small) sets of open deliveries and dead letters.
CREATE FUNCTION hookd.history_drop_next(
    at timestamptz, delivered_keep interval, dead_letter_keep interval
) RETURNS TABLE (relation text, row_count bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '1s'
AS $$
DECLARE
    drop_before timestamptz := at - delivered_keep;
    dead_before timestamptz := at - dead_letter_keep;
    victim record;
    keep text;
BEGIN
    PERFORM pg_advisory_xact_lock(114827819967586);
    SELECT c.relname::text AS part, pc.relname::text AS parent,
           hookd.history_bound(c.oid::regclass) AS hi
    INTO victim
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_class pc ON pc.oid = i.inhparent
    WHERE pc.relnamespace = 'hookd'::regnamespace
      AND pc.relname IN ('events', 'deliveries_delivered', 'deliveries_failed', 'attempts')
      AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
      AND hookd.history_bound(c.oid::regclass)
          <= CASE WHEN pc.relname = 'deliveries_failed' THEN dead_before ELSE drop_before END
    -- Oldest first; of one day, deliveries before the events and attempts kept for them.
    ORDER BY 3, CASE pc.relname WHEN 'deliveries_delivered' THEN 0 WHEN 'deliveries_failed' THEN 1
                                WHEN 'attempts' THEN 2 ELSE 3 END
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    EXECUTE format('LOCK TABLE hookd.%I IN ACCESS EXCLUSIVE MODE', victim.parent);
    keep := CASE victim.parent
        WHEN 'events' THEN format(
            'p.id IN (SELECT q.id FROM hookd.%I q WHERE q.fanned_out_at IS NULL'
            ' UNION ALL SELECT event_id FROM hookd.deliveries_open'
            ' UNION ALL SELECT event_id FROM hookd.deliveries_failed)', victim.part)
        WHEN 'attempts' THEN
            'p.delivery_id IN (SELECT id FROM hookd.deliveries_open'
            ' UNION ALL SELECT id FROM hookd.deliveries_failed)'
        END;
    row_count := 0;
    IF keep IS NOT NULL THEN
        EXECUTE format('CREATE TEMP TABLE hookd_kept ON COMMIT DROP AS SELECT * FROM hookd.%I p WHERE %s',
                       victim.part, keep);
        GET DIAGNOSTICS row_count = ROW_COUNT;
    END IF;
    EXECUTE format('ALTER TABLE hookd.%I DETACH PARTITION hookd.%I', victim.parent, victim.part);
    EXECUTE format('DROP TABLE hookd.%I', victim.part);
    IF keep IS NOT NULL THEN
        EXECUTE format('INSERT INTO hookd.%I OVERRIDING SYSTEM VALUE SELECT * FROM hookd_kept',
                       victim.parent);
        DROP TABLE hookd_kept;
    END IF;
    relation := victim.part;
    RETURN NEXT;
END
$$;
REVOKE EXECUTE ON FUNCTION hookd.history_prepare_next(timestamptz, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION hookd.history_clean_defaults(timestamptz, interval, interval) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION hookd.history_drop_next(timestamptz, interval, interval) FROM PUBLIC;

-- -- the old tables step aside ---------------------------------------------------------------
-- Their constraints, indexes and identity sequences go first: the new tables reuse the names.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT con.conrelid::regclass AS tbl, con.conname
        FROM pg_constraint con
        WHERE con.conrelid IN ('hookd.events'::regclass, 'hookd.deliveries'::regclass)
          AND con.contype IN ('f', 'p', 'u', 'c')
        ORDER BY con.contype = 'f' DESC
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.tbl, r.conname);
    END LOOP;
    FOR r IN
        SELECT i.indexrelid::regclass AS idx FROM pg_index i
        WHERE i.indrelid IN ('hookd.events'::regclass, 'hookd.deliveries'::regclass,
                             'hookd.attempts'::regclass)
    LOOP
        EXECUTE format('DROP INDEX %s', r.idx);
    END LOOP;
END
$$;
CREATE TEMP TABLE hookd_v30_ids ON COMMIT DROP AS
    SELECT e.last_value AS events, e.is_called AS events_called,
           d.last_value AS deliveries, d.is_called AS deliveries_called
    FROM hookd.events_id_seq e, hookd.deliveries_id_seq d;
-- A strict-mode trigger (021) is carried over below.
CREATE TEMP TABLE hookd_v30_strict ON COMMIT DROP AS
    SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'hookd.events'::regclass
                   AND tgname = 'events_known_type') AS strict;
ALTER TABLE hookd.events ALTER COLUMN id DROP IDENTITY;
ALTER TABLE hookd.deliveries ALTER COLUMN id DROP IDENTITY;
ALTER TABLE hookd.events RENAME TO events_v30;
ALTER TABLE hookd.deliveries RENAME TO deliveries_v30;
ALTER TABLE hookd.attempts RENAME TO attempts_v30;

-- -- the new tables --------------------------------------------------------------------------

CREATE TABLE hookd.events (
    id bigint GENERATED ALWAYS AS IDENTITY,
    event_type text NOT NULL,
    tenant text,
    payload jsonb NOT NULL,
    idempotency_key text,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Set when the daemon has created this event's deliveries.
    fanned_out_at timestamptz,
    ordering_key text COLLATE "C",
    fan_out_cursor bigint
) PARTITION BY RANGE (created_at);
CREATE TABLE hookd.events_default PARTITION OF hookd.events DEFAULT;

-- (coalesce(tenant, ''), key) → the event it published; kept as long as delivered history.
CREATE TABLE hookd.idempotency_keys (
    tenant_key text NOT NULL,
    idempotency_key text NOT NULL,
    event_id bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- No foreign key to events (a partitioned events has no unique id alone) or endpoints: fan-out
-- creates deliveries only for events it reads, and retention drops an event only with its
-- finished deliveries.
CREATE TABLE hookd.deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY,
    event_id bigint NOT NULL,
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
    ordering_key text COLLATE "C",
    -- Its event's created_at: the day partition of a finished delivery, and the key that finds
    -- its event in one partition.
    event_created_at timestamptz NOT NULL
) PARTITION BY LIST (state);
CREATE TABLE hookd.deliveries_open PARTITION OF hookd.deliveries FOR VALUES IN ('pending', 'paused');
CREATE TABLE hookd.deliveries_delivered PARTITION OF hookd.deliveries FOR VALUES IN ('delivered')
    PARTITION BY RANGE (event_created_at);
CREATE TABLE hookd.deliveries_delivered_default PARTITION OF hookd.deliveries_delivered DEFAULT;
CREATE TABLE hookd.deliveries_failed PARTITION OF hookd.deliveries FOR VALUES IN ('failed')
    PARTITION BY RANGE (event_created_at);
CREATE TABLE hookd.deliveries_failed_default PARTITION OF hookd.deliveries_failed DEFAULT;

CREATE TABLE hookd.attempts (
    delivery_id bigint NOT NULL,
    attempt integer NOT NULL,
    started_at timestamptz NOT NULL,
    duration_s double precision NOT NULL,
    status integer,
    error text,
    response_body text
) PARTITION BY RANGE (started_at);
CREATE TABLE hookd.attempts_default PARTITION OF hookd.attempts DEFAULT;

-- -- the rows move over ----------------------------------------------------------------------
-- Everything before today into one "before" partition per table; today and the next days get
-- their own (the daemon keeps creating them ahead).
DO $$
DECLARE
    cut date := (now() AT TIME ZONE 'UTC')::date;
    parent text;
    key text;
BEGIN
    FOR parent, key IN VALUES ('events', 'created_at'), ('deliveries_delivered', 'event_created_at'),
                              ('deliveries_failed', 'event_created_at'), ('attempts', 'started_at')
    LOOP
        EXECUTE format('CREATE TABLE hookd.%I PARTITION OF hookd.%I FOR VALUES FROM (MINVALUE) TO (%L)',
                       parent || '_before_' || to_char(cut, 'YYYYMMDD'), parent,
                       cut::timestamp AT TIME ZONE 'UTC');
        FOR i IN 0..2 LOOP
            PERFORM hookd.history_partition_create(parent, key, cut + i);
        END LOOP;
    END LOOP;
END
$$;

INSERT INTO hookd.events (id, event_type, tenant, payload, idempotency_key, created_at,
                          fanned_out_at, ordering_key, fan_out_cursor)
OVERRIDING SYSTEM VALUE
SELECT id, event_type, tenant, payload, idempotency_key, created_at, fanned_out_at, ordering_key,
       fan_out_cursor
FROM hookd.events_v30;
INSERT INTO hookd.idempotency_keys (tenant_key, idempotency_key, event_id, created_at)
SELECT coalesce(tenant, ''), idempotency_key, id, created_at
FROM hookd.events_v30 WHERE idempotency_key IS NOT NULL;
INSERT INTO hookd.deliveries (id, event_id, endpoint_id, state, attempts, next_attempt_at,
                              lease_owner, last_status, last_error, created_at, finished_at,
                              ordering_key, event_created_at)
OVERRIDING SYSTEM VALUE
SELECT d.id, d.event_id, d.endpoint_id, d.state, d.attempts, d.next_attempt_at, d.lease_owner,
       d.last_status, d.last_error, d.created_at, d.finished_at, d.ordering_key, e.created_at
FROM hookd.deliveries_v30 d JOIN hookd.events_v30 e ON e.id = d.event_id;
INSERT INTO hookd.attempts (delivery_id, attempt, started_at, duration_s, status, error,
                            response_body)
SELECT delivery_id, attempt, started_at, duration_s, status, error, response_body
FROM hookd.attempts_v30;
-- Where the old sequences stood (a fresh installation's first id stays 1).
SELECT setval('hookd.events_id_seq', events, events_called),
       setval('hookd.deliveries_id_seq', deliveries, deliveries_called)
FROM hookd_v30_ids;
DROP TABLE hookd.attempts_v30, hookd.deliveries_v30, hookd.events_v30;
-- -- indexes, built once the rows are in (faster than row by row) ----------------------------
-- The primary keys include the partition key, as PostgreSQL requires of a unique index on a
-- partitioned table.
ALTER TABLE hookd.events ADD PRIMARY KEY (id, created_at);
ALTER TABLE hookd.idempotency_keys ADD PRIMARY KEY (tenant_key, idempotency_key);
-- The indexes of versions 1-30, on every partition. A partial index of what is pending stays
-- near empty in every partition but today's, so the claim reads little whatever the history.
CREATE INDEX events_pending_fanout ON hookd.events (id) WHERE fanned_out_at IS NULL;
CREATE INDEX events_by_type ON hookd.events (event_type, id);
CREATE INDEX events_by_tenant ON hookd.events (tenant, id) WHERE tenant IS NOT NULL;
CREATE INDEX events_pending_by_key ON hookd.events (ordering_key, id)
    WHERE ordering_key IS NOT NULL AND fanned_out_at IS NULL;
CREATE INDEX idempotency_keys_age ON hookd.idempotency_keys (created_at);
-- On every partition: by id, an endpoint's newest first, an event's deliveries.
CREATE INDEX deliveries_id ON hookd.deliveries (id);
CREATE INDEX deliveries_by_endpoint ON hookd.deliveries (endpoint_id, id);
CREATE INDEX deliveries_paused_failed ON hookd.deliveries (state) WHERE state IN ('paused', 'failed');
CREATE INDEX deliveries_by_event_delivered ON hookd.deliveries_delivered (event_id, endpoint_id);
CREATE INDEX deliveries_by_event_failed ON hookd.deliveries_failed (event_id, endpoint_id);
-- Open work only: one delivery per (event, endpoint) while open (fan-out inserts here with ON
-- CONFLICT), due claims, the head-of-key checks, the oldest pending.
CREATE UNIQUE INDEX deliveries_open_pair ON hookd.deliveries_open (event_id, endpoint_id);
CREATE INDEX deliveries_due_by_endpoint ON hookd.deliveries_open (endpoint_id, next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX deliveries_open_by_key ON hookd.deliveries_open (endpoint_id, ordering_key, event_id)
    WHERE ordering_key IS NOT NULL;
CREATE INDEX deliveries_pending_age ON hookd.deliveries_open (created_at) WHERE state = 'pending';
CREATE INDEX attempts_delivery ON hookd.attempts (delivery_id);
CREATE INDEX attempts_started ON hookd.attempts (started_at);
ANALYZE hookd.events, hookd.deliveries, hookd.attempts, hookd.idempotency_keys;

DO $$
BEGIN
    IF (SELECT strict FROM hookd_v30_strict) THEN
        CREATE TRIGGER events_known_type BEFORE INSERT ON hookd.events
            FOR EACH ROW EXECUTE FUNCTION hookd.event_type_known();
    END IF;
END
$$;

-- -- publishing with an idempotency key -------------------------------------------------------
-- The same signature, so grants stay; only the idempotent branch changes: the key is claimed
-- first (its primary key decides between concurrent publishers, the second waits for the first
-- to commit), and the event takes the id the key was given.
CREATE OR REPLACE FUNCTION hookd.publish(
    event_type text,
    payload jsonb,
    tenant text DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    ordering_key text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
    problem text := hookd.event_problem(
        event_type, pg_column_size(payload), tenant, idempotency_key, ordering_key);
BEGIN
    IF problem LIKE 'invalid event_type%' THEN
        RAISE EXCEPTION 'hookd.publish: %', problem
            USING ERRCODE = '22023',
                  HINT = 'Use 1-200 characters: dot-separated words of letters, digits, _ and -, e.g. order.paid.';
    ELSIF problem IS NOT NULL THEN
        RAISE EXCEPTION 'hookd.publish: %', problem USING ERRCODE = '22023';
    END IF;

    IF idempotency_key IS NULL THEN
        INSERT INTO hookd.events (event_type, tenant, payload, ordering_key)
        VALUES (publish.event_type, publish.tenant, publish.payload, publish.ordering_key)
        RETURNING id INTO new_id;
    ELSE
        INSERT INTO hookd.idempotency_keys AS k (tenant_key, idempotency_key, event_id)
        VALUES (coalesce(publish.tenant, ''), publish.idempotency_key, nextval('hookd.events_id_seq'))
        ON CONFLICT (tenant_key, idempotency_key) DO NOTHING
        RETURNING k.event_id INTO new_id;
        IF new_id IS NULL THEN
            SELECT k.event_id INTO new_id FROM hookd.idempotency_keys k
            WHERE k.tenant_key = coalesce(publish.tenant, '')
              AND k.idempotency_key = publish.idempotency_key;
            RETURN new_id;
        END IF;
        INSERT INTO hookd.events (id, event_type, tenant, payload, idempotency_key, ordering_key)
        OVERRIDING SYSTEM VALUE
        VALUES (new_id, publish.event_type, publish.tenant, publish.payload,
                publish.idempotency_key, publish.ordering_key);
    END IF;

    -- Wake a sleeping daemon, and only then (see version 10).
    IF pg_try_advisory_xact_lock(114827819967585) THEN
        PERFORM pg_notify('hookd_wake', '');
    END IF;
    RETURN new_id;
END
$$;
