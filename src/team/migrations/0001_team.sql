-- Team budgets (docs/team.md): what several proxies share in PostgreSQL. One row of spend per
-- budget and period, every admitted request's reservation with its lease, every settled
-- request's record. Amounts are picodollars, instants epoch milliseconds.
CREATE TABLE IF NOT EXISTS team_spend (
    budget TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    spent BIGINT NOT NULL DEFAULT 0,
    spent_tokens BIGINT NOT NULL DEFAULT 0,
    reserved BIGINT NOT NULL DEFAULT 0,
    reserved_tokens BIGINT NOT NULL DEFAULT 0,
    requests BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, period_start)
);

CREATE TABLE IF NOT EXISTS team_reservations (
    id BIGSERIAL PRIMARY KEY,
    budget TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    tokens BIGINT NOT NULL,
    proxy TEXT NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS team_reservations_lease ON team_reservations (lease_until);

CREATE TABLE IF NOT EXISTS team_usage (
    id BIGSERIAL PRIMARY KEY,
    budget TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    proxy TEXT NOT NULL,
    model TEXT NOT NULL,
    cost BIGINT NOT NULL,
    tokens BIGINT NOT NULL,
    upstream_request_id TEXT,
    -- The reservation it settles: a retried settlement charges once.
    reservation BIGINT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS team_usage_budget ON team_usage (budget, period_start);

-- Alerts raised for team budgets: whichever proxy claims one first raises it, once.
-- threshold 0 stands for "blocked" (the period's first refusal).
CREATE TABLE IF NOT EXISTS team_alerts (
    budget TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    threshold INT NOT NULL,
    PRIMARY KEY (budget, period_start, threshold)
);
