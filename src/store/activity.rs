//! `session_activity`: what Claude Code's telemetry says each session did, kept per time
//! series so that deltas add up and a cumulative series counts its last value once.

use super::StoreError;
use crate::otlp::Point;
use crate::record::SessionActivity;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

/// Saves an export's points for a budget's sessions.
pub fn save(
    tx: &Transaction<'_>,
    budget_id: i64,
    points: &[Point],
    at_ms: i64,
) -> Result<(), StoreError> {
    let mut up = tx.prepare_cached(
        "INSERT INTO session_activity (budget_id, session, counter, series, value, updated_at)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM budgets WHERE id = ?1)
         ON CONFLICT (budget_id, session, counter, series) DO UPDATE SET
            value = CASE WHEN ?7 THEN excluded.value ELSE sadd(value, excluded.value) END,
            updated_at = excluded.updated_at",
    )?;
    for p in points {
        up.execute(params![
            budget_id,
            p.session,
            p.counter.as_str(),
            p.series,
            i64::try_from(p.value).unwrap_or(i64::MAX),
            at_ms,
            p.cumulative,
        ])?;
    }
    Ok(())
}

/// A session's counters, or None if its client sent no telemetry.
pub fn of(
    conn: &Connection,
    budget_id: i64,
    session: &str,
) -> Result<Option<SessionActivity>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT COUNT(*), ssum(value * (counter = 'lines_added')), ssum(value * (counter = 'lines_removed')),
                ssum(value * (counter = 'commits')), ssum(value * (counter = 'pull_requests')),
                ssum(value * (counter = 'active_ms'))
         FROM session_activity WHERE budget_id = ?1 AND session = ?2",
    )?;
    let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
    let found = stmt
        .query_row(params![budget_id, session], |r| {
            let rows: i64 = r.get(0)?;
            Ok((rows > 0).then_some(SessionActivity {
                lines_added: n(r.get(1)?),
                lines_removed: n(r.get(2)?),
                commits: n(r.get(3)?),
                pull_requests: n(r.get(4)?),
                active_seconds: n(r.get(5)?) / 1000,
            }))
        })
        .optional()?;
    Ok(found.flatten())
}
