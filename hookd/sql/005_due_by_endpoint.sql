-- hookd schema, version 5: due deliveries are claimed per endpoint, so a large backlog held back
-- for one endpoint (full queue, open breaker) costs nothing when claiming for the others.
CREATE INDEX deliveries_due_by_endpoint ON hookd.deliveries (endpoint_id, next_attempt_at)
    WHERE state = 'pending';
DROP INDEX hookd.deliveries_due;
