-- hookd schema, version 3: secret rotation with a grace period, and per-endpoint credentials
-- (authentication to the receiver), stored encrypted when a key is configured.
ALTER TABLE hookd.endpoints
    ADD COLUMN previous_secret text,
    ADD COLUMN previous_secret_until timestamptz,
    ADD COLUMN credentials text;
