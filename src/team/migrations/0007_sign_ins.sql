-- A shared key says whether it is a sign-in, and carries its refresh token's SHA-256, so that
-- every proxy lists it as a sign-in and any proxy can trade its refresh token (once, team-wide:
-- the revocation that spends it is a conditional update).
ALTER TABLE team_keys ADD COLUMN IF NOT EXISTS kind TEXT NOT NULL DEFAULT 'key';
ALTER TABLE team_keys ADD COLUMN IF NOT EXISTS refresh_hash TEXT;
