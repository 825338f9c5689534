//! The `budgets` table, and per-budget reads of the daily roll-up.

use super::StoreError;
use crate::budget::period::{self, Period};
use crate::budget::{Admission, Budget};
use crate::ledger::Totals;
use crate::money::Money;
use crate::record::ModelBreakdown;
use chrono::NaiveDate;
use rusqlite::{Connection, ErrorCode, Transaction, params};
use std::collections::{BTreeMap, HashMap};

fn thresholds_text(t: &[u8]) -> String {
    t.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
}

fn models_json(m: &Option<Vec<String>>) -> Option<String> {
    m.as_ref().and_then(|m| serde_json::to_string(m).ok())
}

fn row_to_budget(r: &rusqlite::Row<'_>) -> rusqlite::Result<Budget> {
    let period: String = r.get(4)?;
    let thresholds: String = r.get(6)?;
    Ok(Budget {
        id: r.get(0)?,
        name: r.get(1)?,
        max_dollars: r.get::<_, Option<i64>>(2)?.map(Money::from_picos),
        max_tokens: r.get::<_, Option<i64>>(3)?.map(|t| t.max(0) as u64),
        period: Period::parse(&period).unwrap_or_default(),
        webhook_url: r.get(5)?,
        thresholds: thresholds
            .split(',')
            .filter_map(|p| p.parse().ok())
            .collect(),
        created_at: period::from_millis(r.get(7)?),
        admission: Admission::parse(&r.get::<_, String>(8)?).unwrap_or_default(),
        max_dollars_per_hour: r.get::<_, Option<i64>>(9)?.map(Money::from_picos),
        max_request_dollars: r.get::<_, Option<i64>>(10)?.map(Money::from_picos),
        models: r
            .get::<_, Option<String>>(11)?
            .and_then(|m| serde_json::from_str(&m).ok()),
        loop_guard: r
            .get::<_, Option<String>>(12)?
            .and_then(|g| serde_json::from_str(&g).ok()),
        parent: r.get(13)?,
        max_session_dollars: r.get::<_, Option<i64>>(14)?.map(Money::from_picos),
        max_subscription_utilization: r
            .get::<_, Option<String>>(15)?
            .and_then(|c| serde_json::from_str(&c).ok()),
    })
}

pub fn load_all(conn: &Connection) -> Result<Vec<Budget>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, name, max_dollars, max_tokens, period, webhook_url, thresholds, created_at, admission,
                max_dollars_per_hour, max_request_dollars, models, loop_guard, parent_id,
                max_session_dollars, max_subscription_utilization FROM budgets ORDER BY id",
    )?;
    let rows = stmt
        .query_map([], row_to_budget)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Every budget's spend by local day (all models together), for rebuilding the ledger.
pub fn days(conn: &Connection) -> Result<HashMap<i64, BTreeMap<NaiveDate, Totals>>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT budget_id, day, ssum(dollars), ssum(input_tokens, cache_write_tokens, cache_read_tokens, output_tokens),
                ssum(requests), ssum(blocked)
         FROM daily GROUP BY budget_id, day",
    )?;
    let mut out: HashMap<i64, BTreeMap<NaiveDate, Totals>> = HashMap::new();
    let rows = stmt.query_map([], |r| {
        let day: String = r.get(1)?;
        Ok((
            r.get::<_, i64>(0)?,
            day,
            Totals {
                dollars: Money::from_picos(r.get(2)?),
                tokens: r.get::<_, i64>(3)?.max(0) as u64,
                requests: r.get::<_, i64>(4)?.max(0) as u64,
                blocked: r.get::<_, i64>(5)?.max(0) as u64,
            },
        ))
    })?;
    for row in rows {
        let (id, day, totals) = row?;
        if let Ok(d) = day.parse::<NaiveDate>() {
            out.entry(id).or_default().insert(d, totals);
        }
    }
    Ok(out)
}

impl StoreError {
    /// A budget of that name exists already.
    pub fn exists(name: &str) -> StoreError {
        StoreError::Conflict(format!(
            "a budget named '{name}' already exists; choose another name or edit that budget"
        ))
    }
}

fn conflict(e: rusqlite::Error, name: &str) -> StoreError {
    if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) {
        StoreError::exists(name)
    } else {
        StoreError::Sql(e)
    }
}

fn caps_json(b: &Budget) -> Option<String> {
    b.max_subscription_utilization
        .and_then(|c| serde_json::to_string(&c).ok())
}

/// Inserts a budget and returns it with its new id.
pub fn insert(tx: &Transaction<'_>, b: &Budget) -> Result<Budget, StoreError> {
    tx.execute(
        "INSERT INTO budgets (name, max_dollars, max_tokens, period, webhook_url, thresholds, created_at, admission,
            max_dollars_per_hour, max_request_dollars, models, loop_guard, parent_id, max_session_dollars,
            max_subscription_utilization)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            b.name,
            b.max_dollars.map(Money::picos),
            b.max_tokens.map(|t| t as i64),
            b.period.as_str(),
            b.webhook_url,
            thresholds_text(&b.thresholds),
            b.created_at.timestamp_millis(),
            b.admission.as_str(),
            b.max_dollars_per_hour.map(Money::picos),
            b.max_request_dollars.map(Money::picos),
            models_json(&b.models),
            b.loop_guard.and_then(|g| serde_json::to_string(&g).ok()),
            b.parent,
            b.max_session_dollars.map(Money::picos),
            caps_json(b),
        ],
    )
    .map_err(|e| conflict(e, &b.name))?;
    Ok(Budget {
        id: tx.last_insert_rowid(),
        ..b.clone()
    })
}

pub fn update(tx: &Transaction<'_>, b: &Budget) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE budgets SET max_dollars = ?2, max_tokens = ?3, period = ?4, webhook_url = ?5, thresholds = ?6, admission = ?7,
            max_dollars_per_hour = ?8, max_request_dollars = ?9, models = ?10, loop_guard = ?11, parent_id = ?12,
            max_session_dollars = ?13, max_subscription_utilization = ?14 WHERE id = ?1",
        params![
            b.id,
            b.max_dollars.map(Money::picos),
            b.max_tokens.map(|t| t as i64),
            b.period.as_str(),
            b.webhook_url,
            thresholds_text(&b.thresholds),
            b.admission.as_str(),
            b.max_dollars_per_hour.map(Money::picos),
            b.max_request_dollars.map(Money::picos),
            models_json(&b.models),
            b.loop_guard.and_then(|g| serde_json::to_string(&g).ok()),
            b.parent,
            b.max_session_dollars.map(Money::picos),
            caps_json(b),
        ],
    )?;
    Ok(())
}

/// Deletes a budget with its usage records and roll-ups.
pub fn delete(tx: &Transaction<'_>, id: i64) -> Result<(), StoreError> {
    tx.execute("DELETE FROM usage WHERE budget_id = ?1", [id])?;
    tx.execute("DELETE FROM daily WHERE budget_id = ?1", [id])?;
    tx.execute("DELETE FROM sessions WHERE budget_id = ?1", [id])?;
    tx.execute("DELETE FROM session_agents WHERE budget_id = ?1", [id])?;
    tx.execute("DELETE FROM session_activity WHERE budget_id = ?1", [id])?;
    tx.execute("DELETE FROM projects WHERE budget_id = ?1", [id])?;
    tx.execute("DELETE FROM virtual_keys WHERE budget_id = ?1", [id])?;
    tx.execute("DELETE FROM usage_swept WHERE budget_id = ?1", [id])?;
    tx.execute("DELETE FROM alerts WHERE budget_id = ?1", [id])?;
    tx.execute("DELETE FROM budgets WHERE id = ?1", [id])?;
    Ok(())
}

/// Spend by model since a local day (the start of the budget's current period).
pub fn breakdown(
    conn: &Connection,
    id: i64,
    since: NaiveDate,
) -> Result<Vec<ModelBreakdown>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT model, ssum(requests), ssum(input_tokens), ssum(output_tokens), ssum(cache_write_tokens),
                ssum(cache_read_tokens), ssum(dollars)
         FROM daily WHERE budget_id = ?1 AND day >= ?2 GROUP BY model ORDER BY ssum(dollars) DESC, model",
    )?;
    let n = |v: i64| v.max(0) as u64;
    let rows = stmt
        .query_map(params![id, since.to_string()], |r| {
            Ok(ModelBreakdown {
                model: r.get(0)?,
                requests: n(r.get(1)?),
                input_tokens: n(r.get(2)?),
                output_tokens: n(r.get(3)?),
                cache_write_tokens: n(r.get(4)?),
                cache_read_tokens: n(r.get(5)?),
                dollars: Money::from_picos(r.get(6)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
