//! The `usage` table (one row per request) and its daily roll-up.

use super::StoreError;
use crate::budget::period::{self, Zone};
use crate::ledger::Totals;
use crate::money::Money;
use crate::pricing::PricedAs;
use crate::pricing::cost::Tokens;
use crate::record::{UsageRecord, UsageRow, UsageStatus};
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, Transaction, params};

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Inserts the row, adds it to `rollup`, and inserts its alerts, unless its budget was deleted
/// meanwhile.
pub(super) fn insert(
    tx: &Transaction<'_>,
    r: &UsageRow,
    rollup: &mut RollUp,
    numbers: &mut Numbers,
) -> rusqlite::Result<()> {
    let seq = numbers.next(tx, r.budget_id)?;
    let t = &r.tokens;
    let priced = match r.priced_as {
        PricedAs::Table => "table",
        PricedAs::Fallback => "fallback",
    };
    let inserted = tx.prepare_cached(
        "INSERT INTO usage (created_at, budget_id, model, status, estimated, priced_as, http_status, stream,
            input_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, output_tokens,
            web_search_requests, cost, duration_ms, upstream_request_id, seq, worst_case, clamped_max_tokens, session,
            agent_id, parent_agent_id, agent_type, project, key_id)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21,
            ?22, ?23, ?24, ?25, ?26
         WHERE EXISTS (SELECT 1 FROM budgets WHERE id = ?2)",
    )?
    .execute(params![
        r.created_at.timestamp_millis(),
        r.budget_id,
        r.model,
        r.status.as_str(),
        r.estimated,
        priced,
        r.http_status,
        r.stream,
        as_i64(t.input),
        as_i64(t.cache_write_5m),
        as_i64(t.cache_write_1h),
        as_i64(t.cache_read),
        as_i64(t.output),
        as_i64(t.web_search_requests),
        r.cost.picos(),
        as_i64(r.duration_ms),
        r.upstream_request_id,
        seq,
        r.worst_case.picos(),
        r.clamped_max_tokens.map(as_i64),
        r.session,
        r.attribution.agent_id,
        r.attribution.parent_agent_id,
        r.attribution.agent_type,
        r.attribution.project,
        r.attribution.key_id,
    ])?;
    if inserted == 0 {
        return Ok(()); // the budget was deleted meanwhile
    }
    numbers.last.insert(r.budget_id, seq);
    // Counted before the alerts, so a failed alert never leaves the row out of the totals.
    rollup.add(r);
    for a in &r.alerts {
        super::alerts::insert(tx, a, r.created_at)?;
    }
    Ok(())
}

/// Each budget's last record number (`seq`, migration 0004), kept between transactions: read
/// from the index in the INSERT, it cost the writer ~3.5 µs a record (docs/PERFORMANCE.md).
/// Forgotten whenever a transaction fails or runs anything but inserts, and read again.
#[derive(Default)]
pub(super) struct Numbers {
    last: std::collections::HashMap<i64, i64>,
}

impl Numbers {
    fn next(&mut self, tx: &Transaction<'_>, budget_id: i64) -> rusqlite::Result<i64> {
        if let Some(n) = self.last.get(&budget_id) {
            return Ok(n + 1);
        }
        // A budget whose records retention has all deleted goes on from the count swept.
        let last: i64 = tx
            .prepare_cached(
                "SELECT COALESCE((SELECT max(seq) FROM usage WHERE budget_id = ?1),
                                 (SELECT n FROM usage_swept WHERE budget_id = ?1), 0)",
            )?
            .query_row([budget_id], |r| r.get(0))?;
        Ok(last + 1)
    }

    pub(super) fn forget(&mut self) {
        self.last.clear();
    }
}

/// What a transaction's usage rows add to `daily`, written once per key at its end: a batch
/// of rows then updates each roll-up row once, not once per usage row.
#[derive(Default)]
pub(super) struct RollUp {
    days: Vec<DayTotals>,
    sessions: super::sessions::RollUp,
    projects: super::projects::RollUp,
}

struct DayTotals {
    budget_id: i64,
    day: NaiveDate,
    model: String,
    requests: i64,
    blocked: i64,
    tokens: Tokens,
    dollars: Money,
}

impl RollUp {
    fn add(&mut self, r: &UsageRow) {
        self.sessions.add(r);
        self.projects.add(r);
        // A batch holds few budgets and models: a scan beats hashing here.
        let i = match self
            .days
            .iter()
            .position(|d| d.budget_id == r.budget_id && d.day == r.day && d.model == r.model)
        {
            Some(i) => i,
            None => {
                self.days.push(DayTotals {
                    budget_id: r.budget_id,
                    day: r.day,
                    model: r.model.clone(),
                    requests: 0,
                    blocked: 0,
                    tokens: Tokens::default(),
                    dollars: Money::ZERO,
                });
                self.days.len() - 1
            }
        };
        let d = &mut self.days[i];
        if r.status == UsageStatus::Blocked {
            d.blocked += 1;
        } else {
            d.requests += 1;
        }
        d.tokens.add(r.tokens);
        d.dollars += r.cost;
    }

    /// Adds the totals to the roll-up.
    pub(super) fn write(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        self.sessions.write(tx)?;
        self.projects.write(tx)?;
        if self.days.is_empty() {
            return Ok(());
        }
        let mut daily = tx.prepare_cached(
            "INSERT INTO daily (budget_id, day, model, requests, blocked, input_tokens, cache_write_tokens,
                cache_read_tokens, output_tokens, web_search_requests, dollars)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (budget_id, day, model) DO UPDATE SET
                requests = sadd(requests, excluded.requests), blocked = sadd(blocked, excluded.blocked),
                input_tokens = sadd(input_tokens, excluded.input_tokens),
                cache_write_tokens = sadd(cache_write_tokens, excluded.cache_write_tokens),
                cache_read_tokens = sadd(cache_read_tokens, excluded.cache_read_tokens),
                output_tokens = sadd(output_tokens, excluded.output_tokens),
                web_search_requests = sadd(web_search_requests, excluded.web_search_requests),
                dollars = sadd(dollars, excluded.dollars)",
        )?;
        for d in &self.days {
            let t = &d.tokens;
            daily.execute(params![
                d.budget_id,
                d.day.to_string(),
                d.model,
                d.requests,
                d.blocked,
                as_i64(t.input),
                as_i64(t.cache_write_5m + t.cache_write_1h),
                as_i64(t.cache_read),
                as_i64(t.output),
                as_i64(t.web_search_requests),
                d.dollars.picos(),
            ])?;
        }
        Ok(())
    }
}

/// The worst cases of a budget's latest `limit` requests, oldest first (for the ledger's
/// typical worst case after a restart).
pub fn recent_worst_cases(
    conn: &Connection,
    budget_id: i64,
    limit: usize,
) -> Result<Vec<Money>, StoreError> {
    let mut v = conn
        .prepare_cached(
            "SELECT worst_case FROM usage WHERE budget_id = ?1 ORDER BY seq DESC LIMIT ?2",
        )?
        .query_map(params![budget_id, as_i64(limit as u64)], |r| {
            r.get::<_, i64>(0)
        })?
        .filter_map(|w| match w {
            Ok(p) if p > 0 => Some(Ok(Money::from_picos(p))),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    v.reverse();
    Ok(v)
}

/// A budget's priced records since `since` (settle time, cost), for the velocity window after a
/// restart. Walks its records newest first and stops a minute past `since` (records are
/// numbered in commit order, which can trail settle order by a batch).
/// What the records of every key of a lineage (its first key's hash) charged, by when: a
/// key's scope's figures at start-up, across a sign-in's refreshed tokens.
pub fn lineage_spend(
    conn: &Connection,
    lineage: &str,
) -> Result<Vec<(DateTime<Utc>, Totals)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT created_at, cost, input_tokens + cache_write_5m_tokens + cache_write_1h_tokens
                + cache_read_tokens + output_tokens, status
         FROM usage WHERE key_id IN
           (SELECT id FROM virtual_keys WHERE hash = ?1 OR lineage = ?1)",
    )?;
    let rows = stmt.query_map([lineage], |r| {
        let blocked = r.get::<_, String>(3)? == "blocked";
        Ok((
            period::from_millis(r.get(0)?),
            Totals {
                dollars: Money::from_picos(r.get(1)?),
                tokens: r.get::<_, i64>(2)?.max(0) as u64,
                requests: u64::from(!blocked),
                blocked: u64::from(blocked),
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Each session's spend since `since` (a budget's period start), for its
/// `max_session_dollars`: at most `MAX_SESSIONS`, the most spent first.
pub fn session_spend_since(
    conn: &Connection,
    budget_id: i64,
    since: DateTime<Utc>,
) -> Result<Vec<(String, Money)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT session, ssum(cost) FROM usage
         WHERE budget_id = ?1 AND created_at >= ?2 AND session IS NOT NULL
         GROUP BY session ORDER BY 2 DESC LIMIT ?3",
    )?;
    let limit = crate::ledger::sessions::MAX_SESSIONS as i64;
    let rows = stmt.query_map(params![budget_id, since.timestamp_millis(), limit], |r| {
        Ok((
            r.get(0)?,
            Money::from_picos(r.get::<_, Option<i64>>(1)?.unwrap_or(0)),
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn costs_since(
    conn: &Connection,
    budget_id: i64,
    since: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, Money)>, StoreError> {
    let since = since.timestamp_millis();
    let mut stmt = conn.prepare_cached(
        "SELECT created_at, cost FROM usage WHERE budget_id = ?1 ORDER BY seq DESC",
    )?;
    let mut rows = stmt.query([budget_id])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let (at, cost): (i64, i64) = (r.get(0)?, r.get(1)?);
        if at < since - 60_000 {
            break;
        }
        if at >= since && cost > 0 {
            out.push((period::from_millis(at), Money::from_picos(cost)));
        }
    }
    Ok(out)
}

const COLUMNS: &str = "u.id, u.created_at, b.name, u.model, u.status, u.estimated, u.priced_as, u.http_status, u.stream,
    u.input_tokens, u.cache_write_5m_tokens, u.cache_write_1h_tokens, u.cache_read_tokens, u.output_tokens,
    u.web_search_requests, u.cost, u.duration_ms, u.upstream_request_id, u.worst_case, u.clamped_max_tokens, u.session,
    u.agent_id, u.parent_agent_id, u.agent_type, u.project";

fn record(row: &rusqlite::Row<'_>, zone: Zone) -> rusqlite::Result<UsageRecord> {
    let n = |i: usize| -> rusqlite::Result<u64> { row.get::<_, i64>(i).map(|v| v.max(0) as u64) };
    let at: i64 = row.get(1)?;
    Ok(UsageRecord {
        id: row.get(0)?,
        created_at: zone.render(period::from_millis(at)),
        budget: row.get(2)?,
        model: row.get(3)?,
        status: UsageStatus::parse(&row.get::<_, String>(4)?),
        estimated: row.get(5)?,
        priced_as: if row.get::<_, String>(6)? == "fallback" {
            PricedAs::Fallback
        } else {
            PricedAs::Table
        },
        http_status: row.get(7)?,
        stream: row.get(8)?,
        input_tokens: n(9)?,
        cache_write_5m_tokens: n(10)?,
        cache_write_1h_tokens: n(11)?,
        cache_read_tokens: n(12)?,
        output_tokens: n(13)?,
        web_search_requests: n(14)?,
        cost_dollars: Money::from_picos(row.get(15)?),
        duration_ms: n(16)?,
        upstream_request_id: row.get(17)?,
        worst_case_dollars: Money::from_picos(row.get(18)?),
        clamped_max_tokens: row.get::<_, Option<i64>>(19)?.map(|v| v.max(0) as u64),
        session: row.get(20)?,
        agent_id: row.get(21)?,
        parent_agent_id: row.get(22)?,
        agent_type: row.get(23)?,
        project: row.get(24)?,
    })
}

/// Up to `limit` of a budget's records numbered below `before` (their `seq`), newest first,
/// and the number to go on from: keyset paging, which new records do not shift.
pub fn before(
    conn: &Connection,
    budget_id: i64,
    before: i64,
    limit: u32,
    zone: Zone,
) -> Result<(Vec<UsageRecord>, Option<i64>), StoreError> {
    let sql = format!(
        "SELECT {COLUMNS}, u.seq FROM usage u JOIN budgets b ON b.id = u.budget_id
         WHERE u.budget_id = ?1 AND u.seq < ?2 ORDER BY u.seq DESC LIMIT ?3"
    );
    let rows = conn
        .prepare_cached(&sql)?
        .query_map(params![budget_id, before, limit], |r| {
            Ok((record(r, zone)?, r.get::<_, i64>("seq")?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let next = rows.last().map(|(_, seq)| *seq);
    Ok((rows.into_iter().map(|(r, _)| r).collect(), next))
}

/// A budget's records, newest first, and how many it has in all.
pub fn page(
    conn: &Connection,
    budget_id: i64,
    limit: u32,
    offset: u64,
    zone: Zone,
) -> Result<(Vec<UsageRecord>, u64), StoreError> {
    // A budget's records are numbered without gaps from its oldest kept one (retention deletes
    // only the oldest), so the page at any offset starts at a known number: one index seek.
    let sql = format!(
        "SELECT {COLUMNS} FROM usage u JOIN budgets b ON b.id = u.budget_id
         WHERE u.budget_id = ?1 AND u.seq <= (SELECT max(seq) FROM usage WHERE budget_id = ?1) - ?3
         ORDER BY u.seq DESC LIMIT ?2"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let items = stmt
        .query_map(params![budget_id, limit, as_i64(offset)], |r| {
            record(r, zone)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    // Every row ever written is in the daily roll-up; retention's deletions are counted apart.
    let total: i64 = conn
        .prepare_cached(
            "SELECT (SELECT COALESCE(ssum(requests, blocked), 0) FROM daily WHERE budget_id = ?1)
                  - COALESCE((SELECT n FROM usage_swept WHERE budget_id = ?1), 0)",
        )?
        .query_row([budget_id], |r| r.get(0))?;
    Ok((items, total.max(0) as u64))
}

/// Counts a sweep's records per budget. `NOT INDEXED` keeps SQLite to the batch's id range:
/// left to itself it walks the whole `(budget_id, seq)` index to group by budget, 0.3 s on 10
/// million rows, inside the writer's transaction.
pub(super) const COUNT_SWEPT: &str =
    "INSERT INTO usage_swept (budget_id, n) SELECT budget_id, COUNT(*) FROM usage NOT INDEXED WHERE id <= ?1 GROUP BY budget_id
     ON CONFLICT (budget_id) DO UPDATE SET n = sadd(n, excluded.n)";

/// Rows deleted per retention transaction, so no commit holds the writer for long.
pub const SWEEP_BATCH: i64 = 10_000;

/// Deletes up to `SWEEP_BATCH` usage records older than `cutoff`, oldest first, keeping the
/// per-budget counts right. Returns how many went. Totals (the daily roll-ups) are untouched.
///
/// Records are written in time order, so the expired ones are the first ids: the sweep reads
/// from the oldest and stops at the first record to keep. Filtering the whole table instead
/// read every row in the writer's transaction each time (0.5 s on 10 million rows, with every
/// commit waiting). A record whose request started before an older one finished can sit just
/// behind a kept record; it goes in a later sweep.
pub fn sweep(tx: &Transaction<'_>, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
    let cutoff = cutoff.timestamp_millis();
    let mut last = None;
    {
        let mut oldest =
            tx.prepare_cached("SELECT id, created_at FROM usage ORDER BY id LIMIT ?1")?;
        let mut rows = oldest.query([SWEEP_BATCH])?;
        while let Some(r) = rows.next()? {
            if r.get::<_, i64>(1)? >= cutoff {
                break;
            }
            last = Some(r.get::<_, i64>(0)?);
        }
    }
    let Some(last) = last else { return Ok(0) };
    tx.execute(COUNT_SWEPT, [last])?;
    let n = tx.execute("DELETE FROM usage WHERE id <= ?1", [last])?;
    Ok(n)
}
