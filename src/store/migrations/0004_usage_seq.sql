-- Each usage record's place among its budget's records (1 for the first ever written), so a
-- page at any offset is one B-tree seek instead of a walk over the offset (docs/PERFORMANCE.md).
-- Retention and budget deletion only ever delete a budget's oldest records, or all of them, so
-- the places of the records kept stay contiguous. The index replaces `(budget_id, id)`: within
-- a budget both orders agree, and a commit still writes one index page.
ALTER TABLE usage ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
UPDATE usage SET seq = r.n FROM (
    SELECT u.id, COALESCE(s.n, 0) + row_number() OVER (PARTITION BY u.budget_id ORDER BY u.id) AS n
    FROM usage u LEFT JOIN usage_swept s ON s.budget_id = u.budget_id
) r WHERE usage.id = r.id;
DROP INDEX usage_by_budget;
CREATE INDEX usage_by_budget ON usage (budget_id, seq);
