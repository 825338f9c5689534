-- Budgets that nest (docs/budgets.md): a request charged to a budget must fit its parent, and
-- the parent's parent, each with its own caps and period.
ALTER TABLE budgets ADD COLUMN parent_id INTEGER;
-- Each agent session's spend within the budget's period is capped at this (picodollars).
ALTER TABLE budgets ADD COLUMN max_session_dollars INTEGER;
