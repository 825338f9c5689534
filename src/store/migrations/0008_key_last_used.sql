-- When each virtual key was last presented (docs/virtual-keys.md). The proxy notes it in
-- memory on every request and saves it here every few seconds, so no request writes for it.
ALTER TABLE virtual_keys ADD COLUMN last_used_at INTEGER;
