//! The `alerts` table: the alert log and the webhook outbox.

use super::StoreError;
use crate::budget::alert::{AlertKind, NewAlert};
use crate::budget::period::{self, Zone};
use crate::money::Money;
use crate::record::{AlertView, Delivery, DeliveryAttempt};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, Transaction, params};

/// Stores an alert unless one with the same once-key exists. Returns whether it was new.
pub fn insert(
    tx: &Transaction<'_>,
    a: &NewAlert,
    first_attempt_at: DateTime<Utc>,
) -> rusqlite::Result<bool> {
    let delivery = if a.webhook_url.is_some() {
        Delivery::Pending
    } else {
        Delivery::None
    };
    let n = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO alerts (created_at, kind, once_key, budget_id, budget, period, period_start, resets_at,
                threshold, model, spent, cap, message, webhook_url, delivery, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?
        .execute(params![
            a.created_at.timestamp_millis(),
            a.kind.as_str(),
            a.once_key(),
            a.budget_id,
            a.budget,
            a.period.as_str(),
            a.window.start.timestamp_millis(),
            a.window.resets_at.map(|r| r.timestamp_millis()),
            a.threshold,
            a.model,
            a.spent.picos(),
            a.cap.map(Money::picos),
            a.message(),
            a.webhook_url,
            delivery.as_str(),
            a.webhook_url.as_ref().map(|_| first_attempt_at.timestamp_millis()),
        ])?;
    Ok(n == 1)
}

const COLUMNS: &str = "id, created_at, kind, budget, budget_id, threshold, model, spent, cap, message, delivery, attempts";

fn view(r: &rusqlite::Row<'_>, zone: Zone) -> rusqlite::Result<AlertView> {
    let attempts: String = r.get(11)?;
    let mut deliveries: Vec<DeliveryAttempt> = serde_json::from_str(&attempts).unwrap_or_default();
    for d in &mut deliveries {
        if let Ok(t) = DateTime::parse_from_rfc3339(&d.at) {
            d.at = zone.render(t.with_timezone(&Utc));
        }
    }
    Ok(AlertView {
        id: r.get(0)?,
        created_at: zone.render(period::from_millis(r.get(1)?)),
        kind: AlertKind::parse(&r.get::<_, String>(2)?),
        budget: r.get(3)?,
        budget_id: r.get(4)?,
        threshold: r.get(5)?,
        model: r.get(6)?,
        spent_dollars: Money::from_picos(r.get(7)?),
        cap_dollars: r.get::<_, Option<i64>>(8)?.map(Money::from_picos),
        message: r.get(9)?,
        delivery: Delivery::parse(&r.get::<_, String>(10)?),
        deliveries,
    })
}

/// Newest first, optionally for one budget.
pub fn list(
    conn: &Connection,
    limit: u32,
    budget_id: Option<i64>,
    zone: Zone,
) -> Result<Vec<AlertView>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM alerts WHERE (?2 IS NULL OR budget_id = ?2) ORDER BY id DESC LIMIT ?1"
    );
    let rows = conn
        .prepare_cached(&sql)?
        .query_map(params![limit, budget_id], |r| view(r, zone))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn get(conn: &Connection, id: i64, zone: Zone) -> Result<Option<AlertView>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM alerts WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query_map([id], |r| view(r, zone))?;
    Ok(rows.next().transpose()?)
}

/// An alert whose webhook delivery is due.
#[derive(Clone, Debug)]
pub struct Due {
    pub id: i64,
    pub webhook_url: String,
    pub payload: Option<String>,
    pub created_at: DateTime<Utc>,
    pub attempts: Vec<DeliveryAttempt>,
    pub budget_id: i64,
    pub period: String,
    pub period_start: DateTime<Utc>,
    pub resets_at: Option<DateTime<Utc>>,
}

pub fn due(conn: &Connection, now: DateTime<Utc>) -> Result<Vec<Due>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, webhook_url, payload, created_at, attempts, budget_id, period, period_start, resets_at
         FROM alerts WHERE delivery = 'pending' AND next_attempt_at <= ?1 ORDER BY next_attempt_at LIMIT 100",
    )?;
    let t = period::from_millis;
    let rows = stmt
        .query_map([now.timestamp_millis()], |r| {
            let attempts: String = r.get(4)?;
            Ok(Due {
                id: r.get(0)?,
                webhook_url: r.get(1)?,
                payload: r.get(2)?,
                created_at: t(r.get(3)?),
                attempts: serde_json::from_str(&attempts).unwrap_or_default(),
                budget_id: r.get(5)?,
                period: r.get(6)?,
                period_start: t(r.get(7)?),
                resets_at: r.get::<_, Option<i64>>(8)?.map(t),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The earliest pending attempt, if any.
pub fn next_due(conn: &Connection) -> Result<Option<DateTime<Utc>>, StoreError> {
    let ms: Option<i64> = conn
        .prepare_cached("SELECT MIN(next_attempt_at) FROM alerts WHERE delivery = 'pending'")?
        .query_row([], |r| r.get(0))?;
    Ok(ms.and_then(DateTime::from_timestamp_millis))
}

/// Records an attempt and the alert's new state (`next` = None ends the retries).
pub fn attempted(
    tx: &Transaction<'_>,
    id: i64,
    attempts: &[DeliveryAttempt],
    delivery: Delivery,
    next: Option<DateTime<Utc>>,
    payload: &str,
) -> Result<(), StoreError> {
    let json = serde_json::to_string(attempts).map_err(|e| StoreError::Conflict(e.to_string()))?;
    tx.execute(
        "UPDATE alerts SET attempts = ?2, delivery = ?3, next_attempt_at = ?4, payload = ?5 WHERE id = ?1",
        params![id, json, delivery.as_str(), next.map(|n| n.timestamp_millis()), payload],
    )?;
    Ok(())
}

/// Already-raised once-keys, to rebuild the in-memory "already alerted" sets at start-up.
pub fn once_keys(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare("SELECT once_key FROM alerts WHERE once_key IS NOT NULL")?;
    let keys = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(keys)
}
