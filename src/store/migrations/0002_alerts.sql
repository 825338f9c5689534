-- Alerts and their webhook outbox. `once_key` makes each alert exactly-once:
-- threshold:<budget>:<period start>:<pct>, blocked:<budget>:<period start>, unpriced:<model>;
-- NULL (never unique) for test alerts.
CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY,
    created_at      INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    once_key        TEXT UNIQUE,
    budget_id       INTEGER NOT NULL,
    budget          TEXT NOT NULL,
    period          TEXT NOT NULL,
    period_start    INTEGER NOT NULL,
    resets_at       INTEGER,
    threshold       INTEGER,
    model           TEXT,
    spent           INTEGER NOT NULL,
    cap             INTEGER,
    message         TEXT NOT NULL,
    webhook_url     TEXT,
    delivery        TEXT NOT NULL,
    attempts        TEXT NOT NULL DEFAULT '[]',
    next_attempt_at INTEGER,
    payload         TEXT
);
CREATE INDEX alerts_due ON alerts (next_attempt_at) WHERE delivery = 'pending';
CREATE INDEX alerts_by_budget ON alerts (budget_id, id);

-- Rows per budget in `usage`, kept by the writer, so a usage page never counts millions of rows.
CREATE TABLE usage_counts (
    budget_id INTEGER PRIMARY KEY,
    n         INTEGER NOT NULL
);
INSERT INTO usage_counts (budget_id, n) SELECT budget_id, COUNT(*) FROM usage GROUP BY budget_id;
