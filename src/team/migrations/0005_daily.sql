-- The team's spend per local day, budget and model (docs/team.md), so every proxy's overview
-- shows the team's totals: charged in the settling statement, refusals counted by the
-- refusing proxy. Amounts are picodollars; `day` is YYYY-MM-DD in the proxies' time zone.
CREATE TABLE IF NOT EXISTS team_daily (
    day TEXT NOT NULL,
    budget TEXT NOT NULL,
    model TEXT NOT NULL,
    dollars BIGINT NOT NULL DEFAULT 0,
    tokens BIGINT NOT NULL DEFAULT 0,
    requests BIGINT NOT NULL DEFAULT 0,
    blocked BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, budget, model)
);
