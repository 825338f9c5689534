-- A refreshed sign-in's token is a new key; its lineage (the SHA-256 of the sign-in's first
-- token) keeps one cap across them: every proxy gives the lineage's keys one scope, named in
-- team_spend by the lineage (`key:<lineage>`).
ALTER TABLE team_keys ADD COLUMN IF NOT EXISTS lineage TEXT;
