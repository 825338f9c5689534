//! The `projects` roll-up: spend per project (a sign-in's billing-group tag) and local day,
//! written by the writer like `daily`.

use super::StoreError;
use super::tally::{ADD_UP, COLUMNS, Groups};
use crate::budget::period::{self, Zone};
use crate::money::Money;
use crate::record::{ProjectSpend, UsageRow};
use chrono::NaiveDate;
use rusqlite::{Connection, Transaction, params};

/// What a transaction's rows add to `projects`.
#[derive(Default)]
pub(super) struct RollUp {
    days: Groups<(i64, String, NaiveDate)>,
}

impl RollUp {
    pub(super) fn add(&mut self, r: &UsageRow) {
        let Some(project) = r.attribution.project.as_deref() else {
            return;
        };
        self.days.add(
            r,
            |(b, p, d)| *b == r.budget_id && p == project && *d == r.day,
            || (r.budget_id, project.to_string(), r.day),
        );
    }

    pub(super) fn write(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        if self.days.is_empty() {
            return Ok(());
        }
        let mut up = tx.prepare_cached(&format!(
            "INSERT INTO projects (budget_id, project, day, {COLUMNS})
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE EXISTS (SELECT 1 FROM budgets WHERE id = ?1)
             ON CONFLICT (budget_id, project, day) DO UPDATE SET {ADD_UP}"
        ))?;
        for ((budget, project, day), t) in self.days.iter() {
            t.upsert(&mut up, &[budget, project, &day.to_string()])?;
        }
        Ok(())
    }
}

/// A budget's projects, the most spent in the period (which began on `since`) first.
pub fn list(
    conn: &Connection,
    budget_id: i64,
    since: NaiveDate,
    zone: Zone,
) -> Result<Vec<ProjectSpend>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT project, ssum(dollars * (day >= ?2)), ssum(requests * (day >= ?2)), ssum(dollars), MAX(last_seen)
         FROM projects WHERE budget_id = ?1 GROUP BY project
         ORDER BY 2 DESC, 4 DESC, project LIMIT 500",
    )?;
    let rows = stmt.query_map(params![budget_id, since.to_string()], |r| {
        Ok(ProjectSpend {
            project: r.get(0)?,
            period_dollars: Money::from_picos(r.get(1)?),
            period_requests: r.get::<_, i64>(2)?.max(0) as u64,
            total_dollars: Money::from_picos(r.get(3)?),
            last_seen: zone.render(period::from_millis(r.get(4)?)),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
