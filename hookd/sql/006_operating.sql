-- hookd schema, version 6: what the operating surface (API, console, CLI) reads and writes.
-- Endpoints gain a description and free-form metadata (string keys and values, set by operators
-- or tenants). The lists page newest first by id, filtered by event type, tenant or endpoint: each
-- filter has an index that serves it in id order, so a page costs the same whatever the history.
ALTER TABLE hookd.endpoints
    ADD COLUMN description text,
    ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}';

-- Events by type (and the loose index scan that lists the types seen), and by tenant.
CREATE INDEX events_by_type ON hookd.events (event_type, id);
CREATE INDEX events_by_tenant ON hookd.events (tenant, id) WHERE tenant IS NOT NULL;

-- Deliveries of one endpoint, newest first. (Deliveries of one event use the (event_id,
-- endpoint_id) unique index, attempts of one delivery attempts_delivery.)
CREATE INDEX deliveries_by_endpoint ON hookd.deliveries (endpoint_id, id);
