-- The team's webhook outbox: whichever proxy finds a delivery due takes it for a lease, so
-- each alert is delivered once even when the proxy that raised it is gone. One signing secret
-- for the team, so receivers verify every proxy's deliveries alike.
CREATE TABLE IF NOT EXISTS team_outbox (
    claim TEXT PRIMARY KEY,
    webhook_url TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts INT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until TIMESTAMPTZ,
    done BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS team_outbox_due ON team_outbox (next_attempt_at) WHERE NOT done;

CREATE TABLE IF NOT EXISTS team_secret (
    id INT PRIMARY KEY CHECK (id = 1),
    secret TEXT NOT NULL
);
