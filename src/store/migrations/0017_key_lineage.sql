-- A sign-in's token is replaced at each refresh by a new key; its lineage (the SHA-256 of the
-- sign-in's first token; NULL: the key is the first of its own) keeps one cap and one spend
-- across them (docs/budgets.md). The index rebuilds a lineage's spend at start-up.
ALTER TABLE virtual_keys ADD COLUMN lineage TEXT;
CREATE INDEX virtual_keys_lineage ON virtual_keys (lineage) WHERE lineage IS NOT NULL;
CREATE INDEX usage_key ON usage (key_id) WHERE key_id IS NOT NULL;
