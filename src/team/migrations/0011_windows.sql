-- Subscription windows across the team (docs/team.md): each credential's last state as any
-- proxy saw it (the newest wins), and the window alerts raised, so that each is raised by one
-- proxy only. A window's reset jitters by seconds between answers: an alert is the same one
-- for resets within 300 s of each other, as on one proxy.
CREATE TABLE IF NOT EXISTS team_subscriptions (
    account TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    seen_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS team_subscriptions_seen ON team_subscriptions (seen_at);

CREATE TABLE IF NOT EXISTS team_window_alerts (
    account TEXT NOT NULL,
    win TEXT NOT NULL,
    resets_at BIGINT NOT NULL,
    threshold INT NOT NULL,
    PRIMARY KEY (account, win, threshold, resets_at)
);

-- True for the one proxy that raises this alert. Alerts of windows reset over a week ago go.
CREATE OR REPLACE FUNCTION team_claim_window_alert(
    p_account TEXT, p_win TEXT, p_resets BIGINT, p_threshold INT)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('window:' || p_account || ':' || p_win));
    DELETE FROM team_window_alerts
    WHERE account = p_account AND win = p_win AND resets_at > 0
      AND resets_at < p_resets - 7 * 86400;
    IF EXISTS (SELECT 1 FROM team_window_alerts
               WHERE account = p_account AND win = p_win AND threshold = p_threshold
                 AND abs(resets_at - p_resets) <= 300) THEN
        RETURN FALSE;
    END IF;
    INSERT INTO team_window_alerts (account, win, resets_at, threshold)
    VALUES (p_account, p_win, p_resets, p_threshold);
    RETURN TRUE;
END $$;
