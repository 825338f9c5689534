-- Who in an agent session made each request (Claude Code's agent headers), and the project
-- it was for (a sign-in's billing-group tag): null when the client did not say.
ALTER TABLE usage ADD COLUMN agent_id TEXT;
ALTER TABLE usage ADD COLUMN parent_agent_id TEXT;
ALTER TABLE usage ADD COLUMN agent_type TEXT;
ALTER TABLE usage ADD COLUMN project TEXT;
