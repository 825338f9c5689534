-- When each budget was last made (epoch ms): a period row made after it starts from the
-- team's charges in that period since then (a period changed mid-way does not start from
-- zero), never from an earlier budget of the same name.
ALTER TABLE team_budgets ADD COLUMN IF NOT EXISTS since BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS team_usage_budget_time ON team_usage (budget, created_at);
