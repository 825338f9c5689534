//! The `pricing` table: the user's price edits, stored as the JSON of a `PriceEntry`.

use super::StoreError;
use crate::pricing::PriceEntry;
use rusqlite::{Connection, Transaction, params};

pub fn overrides(conn: &Connection) -> Result<Vec<PriceEntry>, StoreError> {
    let mut stmt = conn.prepare("SELECT entry FROM pricing ORDER BY model")?;
    let texts = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(texts.len());
    for t in texts {
        match serde_json::from_str(&t) {
            Ok(e) => out.push(e),
            Err(e) => tracing::warn!(error = %e, "ignoring an unreadable stored price entry"),
        }
    }
    Ok(out)
}

pub fn upsert(tx: &Transaction<'_>, entry: &PriceEntry) -> Result<(), StoreError> {
    let json = serde_json::to_string(entry).map_err(|e| StoreError::Conflict(e.to_string()))?;
    tx.execute(
        "INSERT INTO pricing (model, entry) VALUES (?1, ?2) ON CONFLICT (model) DO UPDATE SET entry = excluded.entry",
        params![entry.model, json],
    )?;
    Ok(())
}
