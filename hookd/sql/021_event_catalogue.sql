-- hookd schema, version 21: the event catalogue. The event types an installation publishes, each
-- with a description and, optionally, a JSON Schema of its payload and an example payload
-- (validated against the schema by hookd, with the jsonschema library, before they are stored).
-- Installation-wide: operators change it (`hookd event-type add`), tenants and receivers read it.
CREATE TABLE hookd.event_types (
    name text PRIMARY KEY
        CHECK (length(name) <= 200 AND name ~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$'),
    description text NOT NULL DEFAULT '',
    schema jsonb,
    example jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Strict mode: publishing refuses event types the catalogue does not hold (a typo otherwise goes
-- nowhere, silently). It is a BEFORE INSERT trigger on hookd.events that exists only while strict
-- mode is on, so publishing pays nothing when it is off, and it sees every event: hookd.publish,
-- captured table changes, test events (`hookd.ping`, hookd's own, always accepted). When on, one
-- primary-key probe of this table per event. The error aborts the publishing statement, and so
-- the application's transaction, like publish's own checks (SQLSTATE 22023).
CREATE FUNCTION hookd.event_type_known() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.event_type <> 'hookd.ping'
       AND NOT EXISTS (SELECT 1 FROM hookd.event_types t WHERE t.name = NEW.event_type) THEN
        RAISE EXCEPTION 'hookd.publish: unknown event type %: strict mode accepts only event types in the catalogue',
                        quote_nullable(left(NEW.event_type, 210))
            USING ERRCODE = '22023',
                  HINT = format('Add it with `hookd event-type add %s --description ...`, or turn strict mode off with `hookd event-type strict off`.',
                                left(NEW.event_type, 200));
    END IF;
    RETURN NEW;
END
$$;

-- Turn strict mode on or off (creates or drops the trigger); returns the new state. Runs as the
-- schema's owner, since only a table's owner may drop its triggers; EXECUTE is not PUBLIC's, only
-- the owner's and the daemon role's (`hookd migrate --daemon-role`). Creating or dropping a
-- trigger locks hookd.events against writes until the transaction ends; the lock waits for
-- open transactions that published, at most lock_timeout, so a long one cannot stall every
-- publisher queued behind the switch (SQLSTATE 55P03 lock_not_available: try again).
CREATE FUNCTION hookd.set_strict_event_types(strict boolean) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '5s'
AS $$
BEGIN
    -- The lock first: two concurrent switches then see each other's trigger, never both create.
    LOCK TABLE hookd.events IN SHARE ROW EXCLUSIVE MODE;
    IF strict THEN
        IF NOT EXISTS (SELECT 1 FROM pg_trigger
                       WHERE tgrelid = 'hookd.events'::regclass AND tgname = 'events_known_type') THEN
            CREATE TRIGGER events_known_type BEFORE INSERT ON hookd.events
                FOR EACH ROW EXECUTE FUNCTION hookd.event_type_known();
        END IF;
    ELSE
        DROP TRIGGER IF EXISTS events_known_type ON hookd.events;
    END IF;
    RETURN strict;
END
$$;
REVOKE EXECUTE ON FUNCTION hookd.set_strict_event_types(boolean) FROM PUBLIC;
