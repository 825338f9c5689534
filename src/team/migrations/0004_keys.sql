-- Virtual keys shared by the proxies (docs/team.md): a key made on any proxy works on every
-- one within a second, and a key revoked on any is refused by all. Only the key's SHA-256 is
-- kept, as in each proxy's own table. Keys are never deleted, only revoked, so that a proxy
-- that was away cannot bring a revoked key back.
CREATE TABLE IF NOT EXISTS team_keys (
    hash TEXT PRIMARY KEY,
    budget TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at TIMESTAMPTZ
);
