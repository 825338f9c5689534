-- A key may be a scope of its own below its budget (docs/budgets.md): its cap and period,
-- and each usage record names the key that made it, so the key's spend is rebuilt at start-up.
ALTER TABLE virtual_keys ADD COLUMN max_dollars INTEGER;
ALTER TABLE virtual_keys ADD COLUMN period TEXT;
ALTER TABLE usage ADD COLUMN key_id INTEGER;
