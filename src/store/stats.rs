//! The daily roll-up as rows of the one statistics read model (`record::stats`).

use super::StoreError;
use crate::money::Money;
use crate::record::stats::{DayRow, SpendTotals};
use rusqlite::Connection;

const SUMS: &str = "ssum(dollars), ssum(requests), ssum(blocked),
    ssum(input_tokens, cache_write_tokens, cache_read_tokens, output_tokens)";

fn totals(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<SpendTotals> {
    let n = |i: usize| -> rusqlite::Result<u64> {
        Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0).max(0) as u64)
    };
    Ok(SpendTotals {
        dollars: Money::from_picos(r.get::<_, Option<i64>>(at)?.unwrap_or(0)),
        requests: n(at + 1)?,
        blocked: n(at + 2)?,
        tokens: n(at + 3)?,
    })
}

/// Every budget's roll-up rows by day and model, or only those of the budget named `only`.
pub fn day_rows(conn: &Connection, only: Option<&str>) -> Result<Vec<DayRow>, StoreError> {
    let sql = format!(
        "SELECT d.day, b.name, d.model, {SUMS} FROM daily d JOIN budgets b ON b.id = d.budget_id
         WHERE ?1 IS NULL OR b.name = ?1 GROUP BY d.day, b.id, d.model"
    );
    let rows = conn
        .prepare_cached(&sql)?
        .query_map([only], |r| {
            Ok(DayRow {
                day: r.get(0)?,
                budget: r.get(1)?,
                model: r.get(2)?,
                totals: totals(r, 3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
