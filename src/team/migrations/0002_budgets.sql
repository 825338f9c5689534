-- Budget definitions shared by the proxies: made or changed on any proxy, applied on every
-- other within a second. `spec` is the budget's settings as JSON; NULL marks a deleted one.
CREATE TABLE IF NOT EXISTS team_budgets (
    name TEXT PRIMARY KEY,
    spec TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
