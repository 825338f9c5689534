-- A sign-in's refresh token, as a SHA-256 hash: it trades for a new access token (and a new
-- refresh token) once; null for the keys made on a budget's page.
ALTER TABLE virtual_keys ADD COLUMN refresh_hash TEXT;
CREATE UNIQUE INDEX virtual_keys_by_refresh ON virtual_keys (refresh_hash) WHERE refresh_hash IS NOT NULL;
