-- Nested scopes (docs/team.md): a request is reserved on every scope of its chain — its
-- budget, the budget's ancestors, its key's own cap — one `team_reservations` row per scope,
-- all under one `hold`, taken and settled each in one transaction. A key's scope is the
-- `team_spend` row named `key:<its hash>` (budget names cannot contain ':'), opened from
-- the records that name the key. Every function locks rows in one order — reservations by id,
-- then spend rows by name (byte-wise) — so two requests never wait on each other in a circle.
ALTER TABLE team_reservations ADD COLUMN IF NOT EXISTS hold BIGINT;
UPDATE team_reservations SET hold = id WHERE hold IS NULL;
CREATE INDEX IF NOT EXISTS team_reservations_hold ON team_reservations (hold);
ALTER TABLE team_usage ADD COLUMN IF NOT EXISTS key_hash TEXT;
CREATE INDEX IF NOT EXISTS team_usage_key ON team_usage (key_hash, created_at)
    WHERE key_hash IS NOT NULL;
ALTER TABLE team_keys ADD COLUMN IF NOT EXISTS max_dollars BIGINT;
ALTER TABLE team_keys ADD COLUMN IF NOT EXISTS period TEXT;

-- Reserves `p_amount` and `p_tokens` on every scope, or on none: returns the hold, or the
-- (1-based) index of the first scope, in lock order, that has no row for its period yet
-- (`missing`: open it and ask again) or that the request would take past a cap (`refused`).
CREATE OR REPLACE FUNCTION team_reserve(
    p_scopes TEXT[], p_periods BIGINT[], p_amount BIGINT, p_tokens BIGINT,
    p_max_dollars BIGINT[], p_max_tokens BIGINT[], p_proxy TEXT, p_lease_ms BIGINT,
    OUT hold BIGINT, OUT refused INT, OUT missing INT)
LANGUAGE plpgsql AS $$
DECLARE
    i INT;
    r team_spend%ROWTYPE;
BEGIN
    FOR i IN SELECT o FROM unnest(p_scopes) WITH ORDINALITY AS u(s, o) ORDER BY s COLLATE "C" LOOP
        SELECT * INTO r FROM team_spend s
        WHERE s.budget = p_scopes[i] AND s.period_start = p_periods[i] FOR UPDATE;
        IF NOT FOUND THEN
            missing := i;
            RETURN;
        END IF;
        IF (p_max_dollars[i] IS NOT NULL
                AND r.spent::NUMERIC + r.reserved + p_amount > p_max_dollars[i])
            OR (p_max_tokens[i] IS NOT NULL
                AND r.spent_tokens::NUMERIC + r.reserved_tokens + p_tokens > p_max_tokens[i]) THEN
            refused := i;
            RETURN;
        END IF;
    END LOOP;
    hold := nextval(pg_get_serial_sequence('team_reservations', 'id'));
    UPDATE team_spend s
    SET reserved = s.reserved + p_amount, reserved_tokens = s.reserved_tokens + p_tokens
    FROM unnest(p_scopes, p_periods) AS u(b, p)
    WHERE s.budget = u.b AND s.period_start = u.p;
    INSERT INTO team_reservations (hold, budget, period_start, amount, tokens, proxy, lease_until)
    SELECT hold, u.b, u.p, p_amount, p_tokens, p_proxy,
        now() + p_lease_ms * interval '1 millisecond'
    FROM unnest(p_scopes, p_periods) AS u(b, p);
END $$;

-- Swaps a hold for its cost on every scope and writes the one record (its budget's, naming
-- its key): once, as a retry after a lost answer finds the record and changes nothing.
-- Returns each scope's spend after it. A scope without a row for the period (a budget just
-- moved or deleted) is skipped: a row opened later counts the record.
CREATE OR REPLACE FUNCTION team_settle(
    p_hold BIGINT, p_scopes TEXT[], p_periods BIGINT[], p_budget TEXT, p_period BIGINT,
    p_key TEXT, p_cost BIGINT, p_tokens BIGINT, p_created_at BIGINT, p_proxy TEXT,
    p_model TEXT, p_request_id TEXT, p_day TEXT)
RETURNS TABLE (scope TEXT, spent BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    i INT;
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
    FOR i IN SELECT o FROM unnest(p_scopes) WITH ORDINALITY AS u(s, o) ORDER BY s COLLATE "C" LOOP
        r_amount := NULL;
        r_tokens := NULL;
        DELETE FROM team_reservations t
        WHERE t.hold = p_hold AND t.budget = p_scopes[i] AND t.period_start = p_periods[i]
        RETURNING t.amount, t.tokens INTO r_amount, r_tokens;
        UPDATE team_spend s SET
            reserved = GREATEST(s.reserved - COALESCE(r_amount, 0), 0),
            reserved_tokens = GREATEST(s.reserved_tokens - COALESCE(r_tokens, 0), 0),
            spent = s.spent + p_cost, spent_tokens = s.spent_tokens + p_tokens,
            requests = s.requests + 1
        WHERE s.budget = p_scopes[i] AND s.period_start = p_periods[i]
        RETURNING s.spent INTO after;
        IF FOUND THEN
            scope := p_scopes[i];
            spent := after;
            RETURN NEXT;
        END IF;
    END LOOP;
    INSERT INTO team_daily (day, budget, model, dollars, tokens, requests)
    VALUES (p_day, p_budget, p_model, p_cost, p_tokens, 1)
    ON CONFLICT (day, budget, model) DO UPDATE SET dollars = team_daily.dollars + EXCLUDED.dollars,
        tokens = team_daily.tokens + EXCLUDED.tokens, requests = team_daily.requests + 1;
END $$;

-- Lowers a hold (never raises it) on every scope and frees the difference; a hold already
-- settled or swept is not found and nothing changes.
CREATE OR REPLACE FUNCTION team_shrink(p_hold BIGINT, p_amount BIGINT, p_tokens BIGINT)
RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    i INT;
    b TEXT[];
    p BIGINT[];
    freed BIGINT[];
    freed_tokens BIGINT[];
BEGIN
    WITH old AS (
        SELECT id, amount, tokens FROM team_reservations
        WHERE hold = p_hold ORDER BY id FOR UPDATE),
      lowered AS (
        UPDATE team_reservations t
        SET amount = LEAST(old.amount, p_amount), tokens = LEAST(old.tokens, p_tokens)
        FROM old WHERE t.id = old.id
        RETURNING t.budget, t.period_start, old.amount - LEAST(old.amount, p_amount) AS f,
            old.tokens - LEAST(old.tokens, p_tokens) AS ft)
    SELECT array_agg(budget ORDER BY budget COLLATE "C"),
        array_agg(period_start ORDER BY budget COLLATE "C"),
        array_agg(f ORDER BY budget COLLATE "C"), array_agg(ft ORDER BY budget COLLATE "C")
    INTO b, p, freed, freed_tokens FROM lowered;
    FOR i IN 1 .. COALESCE(array_length(b, 1), 0) LOOP
        UPDATE team_spend s SET reserved = GREATEST(s.reserved - freed[i], 0),
            reserved_tokens = GREATEST(s.reserved_tokens - freed_tokens[i], 0)
        WHERE s.budget = b[i] AND s.period_start = p[i];
    END LOOP;
END $$;

-- Frees every proxy's expired reservations; returns how many.
CREATE OR REPLACE FUNCTION team_sweep() RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    i INT;
    n BIGINT;
    b TEXT[];
    p BIGINT[];
    amounts BIGINT[];
    v_tokens BIGINT[];
BEGIN
    WITH gone AS (
        DELETE FROM team_reservations WHERE id IN (
            SELECT id FROM team_reservations WHERE lease_until < now() ORDER BY id FOR UPDATE)
        RETURNING budget, period_start, amount, tokens),
      sums AS (
        SELECT budget, period_start, SUM(amount)::BIGINT AS a, SUM(tokens)::BIGINT AS t,
            COUNT(*) AS n
        FROM gone GROUP BY budget, period_start)
    SELECT array_agg(budget ORDER BY budget COLLATE "C", period_start),
        array_agg(period_start ORDER BY budget COLLATE "C", period_start),
        array_agg(a ORDER BY budget COLLATE "C", period_start),
        array_agg(t ORDER BY budget COLLATE "C", period_start), COALESCE(SUM(sums.n), 0)
    INTO b, p, amounts, v_tokens, n FROM sums;
    FOR i IN 1 .. COALESCE(array_length(b, 1), 0) LOOP
        UPDATE team_spend s SET reserved = GREATEST(s.reserved - amounts[i], 0),
            reserved_tokens = GREATEST(s.reserved_tokens - v_tokens[i], 0)
        WHERE s.budget = b[i] AND s.period_start = p[i];
    END LOOP;
    RETURN n;
END $$;
