//! The `virtual_keys` table: each key's hash, name, budget and whether it is revoked.

use super::StoreError;
use crate::budget::period::{self, Zone};
use crate::dto::KeyView;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

pub fn insert(
    tx: &Transaction<'_>,
    budget_id: i64,
    name: &str,
    hash: &str,
    at: DateTime<Utc>,
) -> Result<i64, StoreError> {
    tx.execute(
        "INSERT INTO virtual_keys (budget_id, name, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![budget_id, name, hash, at.timestamp_millis()],
    )?;
    Ok(tx.last_insert_rowid())
}

fn view(r: &rusqlite::Row<'_>, zone: Zone) -> rusqlite::Result<KeyView> {
    Ok(KeyView {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at: zone.render(period::from_millis(r.get(2)?)),
        revoked_at: r
            .get::<_, Option<i64>>(3)?
            .map(|t| zone.render(period::from_millis(t))),
    })
}

/// A budget's keys, newest first.
pub fn list(conn: &Connection, budget_id: i64, zone: Zone) -> Result<Vec<KeyView>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, created_at, revoked_at FROM virtual_keys WHERE budget_id = ?1 ORDER BY id DESC",
    )?;
    let rows = stmt
        .query_map([budget_id], |r| view(r, zone))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Revokes one of a budget's keys; the key as it was before (None if it is not the budget's).
pub fn revoke(
    tx: &Transaction<'_>,
    budget_id: i64,
    id: i64,
    at: DateTime<Utc>,
    zone: Zone,
) -> Result<Option<(KeyView, String)>, StoreError> {
    let before = tx
        .query_row(
            "SELECT id, name, created_at, revoked_at, hash FROM virtual_keys WHERE id = ?1 AND budget_id = ?2",
            params![id, budget_id],
            |r| Ok((view(r, zone)?, r.get::<_, String>(4)?)),
        )
        .optional()?;
    if matches!(&before, Some((k, _)) if k.revoked_at.is_none()) {
        tx.execute(
            "UPDATE virtual_keys SET revoked_at = ?2 WHERE id = ?1",
            params![id, at.timestamp_millis()],
        )?;
    }
    Ok(before)
}

/// Every key not revoked: (hash, key id, budget id), for the proxy's lookup.
pub fn active(conn: &Connection) -> Result<Vec<(String, i64, i64)>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT hash, id, budget_id FROM virtual_keys WHERE revoked_at IS NULL")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
