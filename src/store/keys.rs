//! The `virtual_keys` table: each key's hash, name, budget and whether it is revoked.

use super::StoreError;
use crate::budget::period::Period;
use crate::budget::period::{self, Zone};
use crate::money::Money;
use crate::record::{KeyKind, KeyView};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::collections::HashMap;

/// A key as it is made: its budget, name, kind and hash (and a sign-in's refresh hash).
pub struct NewKeyRow<'a> {
    pub budget_id: i64,
    pub name: &'a str,
    pub kind: KeyKind,
    pub hash: &'a str,
    pub refresh_hash: Option<&'a str>,
    /// The key's own cap and its period, when it is a scope below its budget.
    pub cap: Option<(Money, Period)>,
    /// A refreshed sign-in's lineage: its first token's hash.
    pub lineage: Option<&'a str>,
}

pub fn insert(
    tx: &Transaction<'_>,
    k: &NewKeyRow<'_>,
    at: DateTime<Utc>,
) -> Result<i64, StoreError> {
    tx.execute(
        "INSERT INTO virtual_keys
           (budget_id, name, kind, hash, refresh_hash, created_at, max_dollars, period, lineage)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            k.budget_id,
            k.name,
            k.kind.as_str(),
            k.hash,
            k.refresh_hash,
            at.timestamp_millis(),
            k.cap.map(|(m, _)| m.picos()),
            k.cap.map(|(_, p)| p.as_str()),
            k.lineage,
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

/// The key a sign-in's refresh token belongs to: what its successor inherits (its cap as
/// it is once revoked).
#[derive(Debug)]
pub struct Refreshed {
    pub id: i64,
    pub hash: String,
    pub budget_id: i64,
    pub name: String,
    /// The sign-in's first token's hash (this key's own when it is the first).
    pub lineage: String,
}

/// The key a sign-in's refresh token belongs to, while it is not revoked.
pub fn by_refresh(conn: &Connection, refresh_hash: &str) -> Result<Option<Refreshed>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id, budget_id, name, coalesce(lineage, hash), hash
             FROM virtual_keys WHERE refresh_hash = ?1 AND revoked_at IS NULL",
            [refresh_hash],
            |r| {
                Ok(Refreshed {
                    id: r.get(0)?,
                    budget_id: r.get(1)?,
                    name: r.get(2)?,
                    lineage: r.get(3)?,
                    hash: r.get(4)?,
                })
            },
        )
        .optional()?)
}

/// A key's own cap, as this proxy has it.
pub fn cap_of(conn: &Connection, id: i64) -> Result<Option<(Money, Period)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT max_dollars, period FROM virtual_keys WHERE id = ?1",
            [id],
            |r| Ok(cap(r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .flatten())
}

/// Columns: id, name, created_at, revoked_at, last_used_at, kind.
fn view(r: &rusqlite::Row<'_>, zone: Zone) -> rusqlite::Result<KeyView> {
    let at = |i| -> rusqlite::Result<Option<String>> {
        Ok(r.get::<_, Option<i64>>(i)?
            .map(|t| zone.render(period::from_millis(t))))
    };
    Ok(KeyView {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at: zone.render(period::from_millis(r.get(2)?)),
        revoked_at: at(3)?,
        last_used_at: at(4)?,
        kind: KeyKind::parse(&r.get::<_, String>(5)?),
        max_dollars: r.get::<_, Option<i64>>(6)?.map(Money::from_picos),
        period: r
            .get::<_, Option<String>>(7)?
            .and_then(|p| Period::parse(&p)),
        spent_dollars: None,
    })
}

/// A budget's keys, newest first; `used` gives the last uses noted since the last save (by
/// key id, in milliseconds), which are newer than the table's.
pub fn list(
    conn: &Connection,
    budget_id: i64,
    used: &HashMap<i64, i64>,
    zone: Zone,
) -> Result<Vec<KeyView>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, created_at, revoked_at, last_used_at, kind, max_dollars, period FROM virtual_keys WHERE budget_id = ?1 ORDER BY id DESC",
    )?;
    let rows = stmt
        .query_map([budget_id], |r| {
            let mut k = view(r, zone)?;
            let saved: Option<i64> = r.get(4)?;
            if let Some(&t) = used.get(&k.id).filter(|&&t| Some(t) > saved) {
                k.last_used_at = Some(zone.render(period::from_millis(t)));
            }
            Ok(k)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Saves keys' last uses (key id, milliseconds); an older time never replaces a newer one.
pub fn save_uses(tx: &Transaction<'_>, uses: &[(i64, i64)]) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "UPDATE virtual_keys SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE id = ?1",
    )?;
    for (id, at) in uses {
        stmt.execute(params![id, at])?;
    }
    Ok(())
}

/// One of a budget's keys as the table has it.
#[derive(Debug)]
pub struct Found {
    pub view: KeyView,
    pub hash: String,
    /// Its lineage's first key's hash (its own, unless it is a refreshed sign-in's token).
    pub lineage: String,
    /// Epoch ms.
    pub created_at: i64,
}

/// One of a budget's keys; None if it is not the budget's.
pub fn find(
    conn: &Connection,
    budget_id: i64,
    id: i64,
    zone: Zone,
) -> Result<Option<Found>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id, name, created_at, revoked_at, last_used_at, kind, max_dollars, period, hash,
               coalesce(lineage, hash)
             FROM virtual_keys WHERE id = ?1 AND budget_id = ?2",
            params![id, budget_id],
            |r| {
                Ok(Found {
                    view: view(r, zone)?,
                    hash: r.get(8)?,
                    lineage: r.get(9)?,
                    created_at: r.get(2)?,
                })
            },
        )
        .optional()?)
}

/// Sets (or with None takes away) a key's own cap.
pub fn set_cap(
    tx: &Transaction<'_>,
    id: i64,
    cap: Option<(Money, Period)>,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE virtual_keys SET max_dollars = ?2, period = ?3 WHERE id = ?1",
        params![
            id,
            cap.map(|(m, _)| m.picos()),
            cap.map(|(_, p)| p.as_str())
        ],
    )?;
    Ok(())
}

/// Revokes a key, unless it is revoked already.
pub fn revoke(tx: &Transaction<'_>, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE virtual_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id, at.timestamp_millis()],
    )?;
    Ok(())
}

/// A key as a team proxy compares it with the team's.
#[derive(Debug)]
pub struct Known {
    pub id: i64,
    pub hash: String,
    pub budget: String,
    pub name: String,
    pub created_at: i64,
    pub revoked: bool,
    pub kind: KeyKind,
    pub refresh_hash: Option<String>,
    /// Its own cap and period, if it has one.
    pub cap: Option<(Money, Period)>,
    /// A refreshed sign-in's lineage: its first token's hash.
    pub lineage: Option<String>,
}

/// Every key this proxy has had, with its budget's name.
pub fn all(conn: &Connection) -> Result<Vec<Known>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT k.id, k.hash, b.name, k.name, k.created_at, k.revoked_at IS NOT NULL, k.kind,
           k.refresh_hash, k.max_dollars, k.period, k.lineage
         FROM virtual_keys k JOIN budgets b ON b.id = k.budget_id",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Known {
                id: r.get(0)?,
                hash: r.get(1)?,
                budget: r.get(2)?,
                name: r.get(3)?,
                created_at: r.get(4)?,
                revoked: r.get(5)?,
                kind: KeyKind::parse(&r.get::<_, String>(6)?),
                refresh_hash: r.get(7)?,
                cap: cap(r.get(8)?, r.get(9)?),
                lineage: r.get(10)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A key's cap from its columns: both or none.
fn cap(max_dollars: Option<i64>, period: Option<String>) -> Option<(Money, Period)> {
    let period = Period::parse(&period?).unwrap_or_default();
    Some((Money::from_picos(max_dollars?), period))
}

/// A key not revoked, as the proxy looks it up.
#[derive(Clone, Debug)]
pub struct Active {
    pub hash: String,
    pub id: i64,
    pub budget_id: i64,
    /// A refreshed sign-in's lineage: its first token's hash.
    pub lineage: Option<String>,
}

/// Every key not revoked, for the proxy's lookup.
pub fn active(conn: &Connection) -> Result<Vec<Active>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT hash, id, budget_id, lineage FROM virtual_keys WHERE revoked_at IS NULL",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Active {
                hash: r.get(0)?,
                id: r.get(1)?,
                budget_id: r.get(2)?,
                lineage: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A live key with its own cap: what the ledger needs to make its scope.
#[derive(Clone, Debug)]
pub struct CappedKey {
    pub id: i64,
    pub budget_id: i64,
    pub name: String,
    /// Its lineage's first key's hash (its own, unless it is a refreshed sign-in's): its
    /// scope's name in a team database and what its spend is rebuilt from.
    pub lineage: String,
    pub max_dollars: Money,
    pub period: Period,
    pub created_at: DateTime<Utc>,
}

/// Every live key with its own cap.
pub fn capped(conn: &Connection) -> Result<Vec<CappedKey>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, budget_id, name, max_dollars, period, created_at, coalesce(lineage, hash)
         FROM virtual_keys
         WHERE revoked_at IS NULL AND max_dollars IS NOT NULL",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(CappedKey {
                id: r.get(0)?,
                budget_id: r.get(1)?,
                name: r.get(2)?,
                lineage: r.get(6)?,
                max_dollars: Money::from_picos(r.get(3)?),
                period: Period::parse(&r.get::<_, String>(4)?).unwrap_or_default(),
                created_at: period::from_millis(r.get(5)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
