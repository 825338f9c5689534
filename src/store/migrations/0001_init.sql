-- Money columns are integer picodollars; times are Unix milliseconds (UTC); `day` is the
-- local calendar date (YYYY-MM-DD) in the configured time zone.
CREATE TABLE budgets (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    max_dollars INTEGER,
    max_tokens  INTEGER,
    period      TEXT NOT NULL,
    webhook_url TEXT,
    thresholds  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE usage (
    id                    INTEGER PRIMARY KEY,
    created_at            INTEGER NOT NULL,
    budget_id             INTEGER NOT NULL,
    model                 TEXT NOT NULL,
    status                TEXT NOT NULL,
    estimated             INTEGER NOT NULL,
    priced_as             TEXT NOT NULL,
    http_status           INTEGER NOT NULL,
    stream                INTEGER NOT NULL,
    input_tokens          INTEGER NOT NULL,
    cache_write_5m_tokens INTEGER NOT NULL,
    cache_write_1h_tokens INTEGER NOT NULL,
    cache_read_tokens     INTEGER NOT NULL,
    output_tokens         INTEGER NOT NULL,
    web_search_requests   INTEGER NOT NULL,
    cost                  INTEGER NOT NULL,
    duration_ms           INTEGER NOT NULL,
    upstream_request_id   TEXT
);
CREATE INDEX usage_by_budget ON usage (budget_id, id);

-- Roll-up per budget, local day and model. Budget totals and stats come from here, so
-- retention (which deletes usage rows) never changes them.
CREATE TABLE daily (
    budget_id           INTEGER NOT NULL,
    day                 TEXT NOT NULL,
    model               TEXT NOT NULL,
    requests            INTEGER NOT NULL DEFAULT 0,
    blocked             INTEGER NOT NULL DEFAULT 0,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens   INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    web_search_requests INTEGER NOT NULL DEFAULT 0,
    dollars             INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, day, model)
) WITHOUT ROWID;

-- The user's price edits; the seed table lives in the binary.
CREATE TABLE pricing (
    model TEXT PRIMARY KEY,
    entry TEXT NOT NULL
);
