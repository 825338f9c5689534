//! The `sessions` roll-up: spend per agent session and model, written once per key at the end
//! of each of the writer's transactions, and read a page of sessions at a time.

use super::StoreError;
use crate::budget::period::{self, Zone};
use crate::money::Money;
use crate::record::UsageRow;
use crate::record::{SessionView, UsageStatus};
use rusqlite::{Connection, Transaction, params};

/// What a transaction's rows add to `sessions`.
#[derive(Default)]
pub(super) struct RollUp {
    totals: Vec<Totals>,
}

struct Totals {
    budget_id: i64,
    session: String,
    model: String,
    first: i64,
    last: i64,
    requests: i64,
    blocked: i64,
    tokens: u64,
    dollars: Money,
}

impl RollUp {
    pub(super) fn add(&mut self, r: &UsageRow) {
        let Some(session) = r.session.as_deref() else {
            return;
        };
        let at = r.created_at.timestamp_millis();
        let found = self
            .totals
            .iter()
            .position(|t| t.budget_id == r.budget_id && t.session == session && t.model == r.model);
        let t = match found {
            Some(i) => &mut self.totals[i],
            None => {
                self.totals.push(Totals {
                    budget_id: r.budget_id,
                    session: session.to_string(),
                    model: r.model.clone(),
                    first: at,
                    last: at,
                    requests: 0,
                    blocked: 0,
                    tokens: 0,
                    dollars: Money::ZERO,
                });
                let last = self.totals.len() - 1;
                &mut self.totals[last]
            }
        };
        t.first = t.first.min(at);
        t.last = t.last.max(at);
        if r.status == UsageStatus::Blocked {
            t.blocked += 1;
        } else {
            t.requests += 1;
        }
        t.tokens += r.tokens.total();
        t.dollars += r.cost;
    }

    pub(super) fn write(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        if self.totals.is_empty() {
            return Ok(());
        }
        let mut up = tx.prepare_cached(
            "INSERT INTO sessions (budget_id, session, model, first_seen, last_seen, requests, blocked, tokens, dollars)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE EXISTS (SELECT 1 FROM budgets WHERE id = ?1)
             ON CONFLICT (budget_id, session, model) DO UPDATE SET
                first_seen = min(first_seen, excluded.first_seen), last_seen = max(last_seen, excluded.last_seen),
                requests = sadd(requests, excluded.requests), blocked = sadd(blocked, excluded.blocked),
                tokens = sadd(tokens, excluded.tokens), dollars = sadd(dollars, excluded.dollars)",
        )?;
        for t in &self.totals {
            up.execute(params![
                t.budget_id,
                t.session,
                t.model,
                t.first,
                t.last,
                t.requests,
                t.blocked,
                i64::try_from(t.tokens).unwrap_or(i64::MAX),
                t.dollars.picos(),
            ])?;
        }
        Ok(())
    }
}

/// A page of a budget's sessions, most recently seen first, and how many it has.
pub fn page(
    conn: &Connection,
    budget_id: i64,
    limit: u32,
    offset: u64,
    zone: Zone,
) -> Result<(Vec<SessionView>, u64), StoreError> {
    let total: i64 = conn
        .prepare_cached("SELECT COUNT(DISTINCT session) FROM sessions WHERE budget_id = ?1")?
        .query_row([budget_id], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(
        "SELECT session, ssum(dollars), ssum(requests), ssum(blocked), ssum(tokens), MIN(first_seen),
                MAX(last_seen), group_concat(model, char(10))
         FROM sessions WHERE budget_id = ?1 GROUP BY session
         ORDER BY MAX(last_seen) DESC, session LIMIT ?2 OFFSET ?3",
    )?;
    let n = |v: i64| v.max(0) as u64;
    let items = stmt
        .query_map(
            params![budget_id, limit, i64::try_from(offset).unwrap_or(i64::MAX)],
            |r| {
                let mut models: Vec<String> = r
                    .get::<_, String>(7)?
                    .split('\n')
                    .map(str::to_string)
                    .collect();
                models.sort();
                Ok(SessionView {
                    session: r.get(0)?,
                    spent_dollars: Money::from_picos(r.get(1)?),
                    requests: n(r.get(2)?),
                    blocked: n(r.get(3)?),
                    tokens: n(r.get(4)?),
                    first_seen: zone.render(period::from_millis(r.get(5)?)),
                    last_seen: zone.render(period::from_millis(r.get(6)?)),
                    models,
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((items, n(total)))
}
