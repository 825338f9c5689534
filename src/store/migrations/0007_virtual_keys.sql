-- Virtual keys (docs/virtual-keys.md): a budget's own API keys. Only a SHA-256 of each key is
-- stored; the key itself is shown once, when it is made.
CREATE TABLE virtual_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    budget_id   INTEGER NOT NULL,
    name        TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX virtual_keys_by_budget ON virtual_keys (budget_id);
