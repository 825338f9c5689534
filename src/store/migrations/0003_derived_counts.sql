-- Rows per budget in `usage` are derived instead of counted on every commit: the daily
-- roll-up counts every row ever written (requests + blocked), and `usage_swept` the rows
-- retention has deleted since. A commit then writes one page fewer (docs/PERFORMANCE.md).
CREATE TABLE usage_swept (
    budget_id INTEGER PRIMARY KEY,
    n         INTEGER NOT NULL
);
INSERT INTO usage_swept (budget_id, n)
    SELECT d.budget_id, d.written - COALESCE(c.n, 0)
    FROM (SELECT budget_id, SUM(requests + blocked) AS written FROM daily GROUP BY budget_id) d
    LEFT JOIN usage_counts c ON c.budget_id = d.budget_id
    WHERE d.written <> COALESCE(c.n, 0);
DROP TABLE usage_counts;
