-- Claude Code's sign-ins are keys of their budget too (docs/claude-code.md): `kind` tells them
-- from the keys made on a budget's page.
ALTER TABLE virtual_keys ADD COLUMN kind TEXT NOT NULL DEFAULT 'key';
