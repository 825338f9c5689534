-- Spend per agent of a session (agent '' is the main agent; subagents by Claude Code's
-- x-claude-code-agent-id) and per project (a sign-in's billing-group tag) by local day,
-- rolled up by the writer like `sessions`.
CREATE TABLE session_agents (
    budget_id       INTEGER NOT NULL,
    session         TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    agent_type      TEXT,
    parent_agent_id TEXT,
    first_seen      INTEGER NOT NULL,
    last_seen       INTEGER NOT NULL,
    requests        INTEGER NOT NULL DEFAULT 0,
    blocked         INTEGER NOT NULL DEFAULT 0,
    tokens          INTEGER NOT NULL DEFAULT 0,
    dollars         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, session, agent_id)
) WITHOUT ROWID;
CREATE TABLE projects (
    budget_id  INTEGER NOT NULL,
    project    TEXT NOT NULL,
    day        TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    requests   INTEGER NOT NULL DEFAULT 0,
    blocked    INTEGER NOT NULL DEFAULT 0,
    tokens     INTEGER NOT NULL DEFAULT 0,
    dollars    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, project, day)
) WITHOUT ROWID;
-- What Claude Code's telemetry says each session did, by counter and time series (a digest of
-- the series' attributes): a delta adds to the series, a cumulative point replaces it.
CREATE TABLE session_activity (
    budget_id  INTEGER NOT NULL,
    session    TEXT NOT NULL,
    counter    TEXT NOT NULL,
    series     TEXT NOT NULL,
    value      INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (budget_id, session, counter, series)
) WITHOUT ROWID;
-- Records written since attribution was added (0010). Their day is the UTC day: the zone is
-- not known here, and only builds of this round wrote such records.
INSERT INTO session_agents
SELECT budget_id, session, coalesce(agent_id, ''), max(agent_type), max(parent_agent_id),
       min(created_at), max(created_at), ssum(status <> 'blocked'), ssum(status = 'blocked'),
       ssum(input_tokens + cache_write_5m_tokens + cache_write_1h_tokens + cache_read_tokens + output_tokens),
       ssum(cost)
FROM usage WHERE session IS NOT NULL GROUP BY budget_id, session, coalesce(agent_id, '');
INSERT INTO projects
SELECT budget_id, project, date(created_at / 1000, 'unixepoch'), min(created_at), max(created_at),
       ssum(status <> 'blocked'), ssum(status = 'blocked'),
       ssum(input_tokens + cache_write_5m_tokens + cache_write_1h_tokens + cache_read_tokens + output_tokens),
       ssum(cost)
FROM usage WHERE project IS NOT NULL GROUP BY budget_id, project, date(created_at / 1000, 'unixepoch');
