//! The last state of each credential seen, by fingerprint (as JSON the service owns).

use super::StoreError;
use rusqlite::{Connection, Transaction, params};

/// Saves accounts' states: (account, state, seen_at in epoch seconds).
pub fn save(tx: &Transaction<'_>, states: &[(String, String, i64)]) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO subscriptions (account, state, seen_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (account) DO UPDATE SET state = excluded.state, seen_at = excluded.seen_at",
    )?;
    for (account, state, seen_at) in states {
        stmt.execute(params![account, state, seen_at])?;
    }
    Ok(())
}

/// Forgets accounts no longer kept in memory.
pub fn forget(tx: &Transaction<'_>, accounts: &[String]) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached("DELETE FROM subscriptions WHERE account = ?1")?;
    for a in accounts {
        stmt.execute(params![a])?;
    }
    Ok(())
}

/// Every account's state, the most recently seen first.
pub fn all(conn: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT account, state FROM subscriptions ORDER BY seen_at DESC")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
