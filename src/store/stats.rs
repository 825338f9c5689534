//! Aggregates over the daily roll-up for `GET /api/stats`.

use super::StoreError;
use crate::dto::{BudgetSpend, ModelSpend, SpendTotals, Stats};
use crate::money::Money;
use chrono::NaiveDate;
use rusqlite::{Connection, params};

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

fn since(conn: &Connection, day: &str) -> Result<SpendTotals, StoreError> {
    let sql = format!("SELECT {SUMS} FROM daily WHERE day >= ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![day], |r| totals(r, 0))?)
}

/// Totals for today, this month and all time, and all-time spend by model and by budget.
pub fn stats(
    conn: &Connection,
    today: NaiveDate,
    month_start: NaiveDate,
) -> Result<Stats, StoreError> {
    let by_model_sql = format!(
        "SELECT model, {SUMS} FROM daily GROUP BY model ORDER BY ssum(dollars) DESC, model"
    );
    let by_model = conn
        .prepare_cached(&by_model_sql)?
        .query_map([], |r| {
            Ok(ModelSpend {
                model: r.get(0)?,
                totals: totals(r, 1)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let by_budget_sql = format!(
        "SELECT b.name, b.id, {SUMS} FROM budgets b LEFT JOIN daily d ON d.budget_id = b.id
         GROUP BY b.id ORDER BY ssum(dollars) DESC, b.id"
    );
    let by_budget = conn
        .prepare_cached(&by_budget_sql)?
        .query_map([], |r| {
            Ok(BudgetSpend {
                budget: r.get(0)?,
                budget_id: r.get(1)?,
                totals: totals(r, 2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Stats {
        today: since(conn, &today.to_string())?,
        this_month: since(conn, &month_start.to_string())?,
        all_time: since(conn, "0000-00-00")?,
        by_model,
        by_budget,
    })
}

/// Spend per (day, budget name, model) since a local day.
pub fn daily_spend(
    conn: &Connection,
    since: NaiveDate,
) -> Result<Vec<(String, String, String, Money)>, StoreError> {
    let rows = conn
        .prepare_cached(
            "SELECT d.day, b.name, d.model, ssum(d.dollars) FROM daily d JOIN budgets b ON b.id = d.budget_id
             WHERE d.day >= ?1 GROUP BY d.day, b.name, d.model ORDER BY d.day",
        )?
        .query_map(params![since.to_string()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, Money::from_picos(r.get(3)?))))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A budget's totals on one model on one local day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayRow {
    /// YYYY-MM-DD.
    pub day: String,
    pub budget: String,
    pub model: String,
    pub totals: SpendTotals,
}

/// A budget's roll-up rows, by its name (for a team, whose budgets are known by name).
pub fn daily_rows(conn: &Connection, budget: &str) -> Result<Vec<DayRow>, StoreError> {
    let sql = format!(
        "SELECT d.day, b.name, d.model, {SUMS} FROM daily d JOIN budgets b ON b.id = d.budget_id
         WHERE b.name = ?1 GROUP BY d.day, d.model"
    );
    let rows = conn
        .prepare_cached(&sql)?
        .query_map([budget], |r| {
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
