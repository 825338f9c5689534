-- A request settles on its chain as it is when it settles (docs/team.md): a budget moved
-- while the request was in flight is charged under its new parents, as its record counts
-- whenever a row is opened again. The hold is freed on every row it was taken on, whatever
-- the chain is now. Locks as before: the hold's reservations by id, then spend rows by name
-- (byte-wise), each (name, period) once.
CREATE OR REPLACE FUNCTION team_settle(
    p_hold BIGINT, p_scopes TEXT[], p_periods BIGINT[], p_budget TEXT, p_period BIGINT,
    p_key TEXT, p_cost BIGINT, p_tokens BIGINT, p_created_at BIGINT, p_proxy TEXT,
    p_model TEXT, p_request_id TEXT, p_day TEXT)
RETURNS TABLE (scope TEXT, spent BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    s_name TEXT;
    s_period BIGINT;
    s_charged BOOLEAN;
    r_amount BIGINT;
    r_tokens BIGINT;
    after BIGINT;
BEGIN
    INSERT INTO team_usage (budget, period_start, created_at, proxy, model, cost, tokens,
        upstream_request_id, reservation, key_hash)
    VALUES (p_budget, p_period, p_created_at, p_proxy, p_model, p_cost, p_tokens,
        p_request_id, p_hold, p_key)
    ON CONFLICT (reservation) DO NOTHING;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM 1 FROM team_reservations WHERE team_reservations.hold = p_hold ORDER BY id FOR UPDATE;
    FOR s_name, s_period, s_charged IN
        SELECT u.b, u.p, bool_or(u.c) FROM (
            SELECT x.b, x.p, TRUE AS c FROM unnest(p_scopes, p_periods) AS x(b, p)
            UNION ALL
            SELECT t.budget, t.period_start, FALSE FROM team_reservations t
            WHERE t.hold = p_hold) u
        GROUP BY u.b, u.p
        ORDER BY u.b COLLATE "C", u.p
    LOOP
        r_amount := NULL;
        r_tokens := NULL;
        DELETE FROM team_reservations t
        WHERE t.hold = p_hold AND t.budget = s_name AND t.period_start = s_period
        RETURNING t.amount, t.tokens INTO r_amount, r_tokens;
        IF s_charged THEN
            UPDATE team_spend s SET
                reserved = GREATEST(s.reserved - COALESCE(r_amount, 0), 0),
                reserved_tokens = GREATEST(s.reserved_tokens - COALESCE(r_tokens, 0), 0),
                spent = s.spent + p_cost, spent_tokens = s.spent_tokens + p_tokens,
                requests = s.requests + 1
            WHERE s.budget = s_name AND s.period_start = s_period
            RETURNING s.spent INTO after;
            IF FOUND THEN
                scope := s_name;
                spent := after;
                RETURN NEXT;
            END IF;
        ELSIF r_amount IS NOT NULL THEN
            UPDATE team_spend s SET
                reserved = GREATEST(s.reserved - r_amount, 0),
                reserved_tokens = GREATEST(s.reserved_tokens - r_tokens, 0)
            WHERE s.budget = s_name AND s.period_start = s_period;
        END IF;
    END LOOP;
    INSERT INTO team_daily (day, budget, model, dollars, tokens, requests)
    VALUES (p_day, p_budget, p_model, p_cost, p_tokens, 1)
    ON CONFLICT (day, budget, model) DO UPDATE SET dollars = team_daily.dollars + EXCLUDED.dollars,
        tokens = team_daily.tokens + EXCLUDED.tokens, requests = team_daily.requests + 1;
END $$;
