-- hookd schema, version 2: circuit-breaker state per endpoint, for `hookd status` and metrics.
-- The daemon decides from its own memory; this column reports what it decided.
ALTER TABLE hookd.endpoints ADD COLUMN breaker_open_until timestamptz;
