-- hookd schema, version 30: fan-out in bounded pieces, and status figures that stay cheap at any
-- backlog.

-- While an event is fanned out in pieces (more matching endpoints than one fan-out statement
-- creates deliveries for), the highest endpoint id it already has a delivery for: the next piece
-- starts after it. Written in the same transaction as that piece's deliveries, so a crash
-- mid-way resumes where the last committed piece ended; NULL until the first piece is cut.
ALTER TABLE hookd.events ADD COLUMN fan_out_cursor bigint;

-- The age of the oldest pending delivery in one index probe (status_counts), instead of reading
-- every pending row. Only pending versions of a row are indexed: a delivery that ends adds no
-- entry.
CREATE INDEX deliveries_pending_age ON hookd.deliveries (created_at) WHERE state = 'pending';

-- The capped counts of paused and failed deliveries (status_counts) read only those: the older
-- deliveries_open_by_endpoint holds every pending one too, and with a million pending a count of
-- paused through it (or a sequential scan) reads them all. Written only when a delivery is paused
-- or dead-lettered.
CREATE INDEX deliveries_paused_failed ON hookd.deliveries (state) WHERE state IN ('paused', 'failed');

-- The planner's estimate of the rows `query` returns (EXPLAIN, no execution): from the table's
-- current size and its statistics as of the last ANALYZE (autovacuum's or an operator's), so it
-- lags a quickly changing backlog. status_counts uses it only above the exact-count cap. VOLATILE:
-- PostgreSQL refuses EXPLAIN in a stable function.
CREATE FUNCTION hookd.row_estimate(query text) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    plan jsonb;
BEGIN
    EXECUTE 'EXPLAIN (FORMAT JSON) ' || query INTO plan;
    RETURN (plan -> 0 -> 'Plan' ->> 'Plan Rows')::bigint;
END
$$;
