-- Admission modes (docs/admission.md): a budget's mode, and on each usage record the worst case
-- the request asked for (picodollars; 0 for records written before this migration) and, when it
-- was clamped, the max_tokens it was forwarded with.
ALTER TABLE budgets ADD COLUMN admission TEXT NOT NULL DEFAULT 'strict';
ALTER TABLE usage ADD COLUMN worst_case INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN clamped_max_tokens INTEGER;
