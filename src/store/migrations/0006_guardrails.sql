-- Agent guardrails (docs/guardrails.md): a velocity cap, a per-request ceiling, a model
-- allow-list (a JSON array of model ids), and the session each usage record belongs to.
ALTER TABLE budgets ADD COLUMN max_dollars_per_hour INTEGER;
ALTER TABLE budgets ADD COLUMN max_request_dollars INTEGER;
ALTER TABLE budgets ADD COLUMN models TEXT;
ALTER TABLE budgets ADD COLUMN loop_guard TEXT;
ALTER TABLE usage ADD COLUMN session TEXT;
-- Spend per session (Claude Code's x-claude-code-session-id, or X-Agent-Budget-Session), by
-- model, rolled up by the writer like `daily`. Kept with its budget: retention deletes usage
-- records only.
CREATE TABLE sessions (
    budget_id   INTEGER NOT NULL,
    session     TEXT NOT NULL,
    model       TEXT NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    requests    INTEGER NOT NULL DEFAULT 0,
    blocked     INTEGER NOT NULL DEFAULT 0,
    tokens      INTEGER NOT NULL DEFAULT 0,
    dollars     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, session, model)
) WITHOUT ROWID;
