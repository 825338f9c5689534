//! On a team, the overview's totals and spend chart are the team's: its daily totals for the
//! shared budgets, this proxy's own for `default`, which is each proxy's own (docs/team.md).

use super::Service;
use crate::budget::DEFAULT_BUDGET;
use crate::dto::{BudgetSpend, ModelSpend, SpendTotals, Stats};
use crate::error::HttpError;
use crate::store::stats::{DayRow, daily_rows};
use crate::team::Team;
use std::collections::HashMap;

impl Service {
    /// The roll-up rows of the team's figures: the team's for each shared budget this proxy
    /// has, this proxy's own for `default`. None while the team database cannot say (the
    /// overview then shows this proxy's own figures).
    pub(super) async fn team_rows(&self, team: &Team) -> Result<Option<Vec<DayRow>>, HttpError> {
        let shared = match team.daily().await {
            Ok(days) => days,
            Err(e) => {
                tracing::debug!("the team's daily totals are not available: {e}");
                return Ok(None);
            }
        };
        let mut rows = self.store.read(|c| daily_rows(c, DEFAULT_BUDGET)).await?;
        rows.extend(
            shared
                .into_iter()
                .filter(|d| d.budget != DEFAULT_BUDGET && self.ledger.find(&d.budget).is_some())
                .map(|d| DayRow {
                    day: d.day,
                    budget: d.budget,
                    model: d.model,
                    totals: SpendTotals {
                        dollars: d.dollars,
                        requests: d.requests,
                        blocked: d.blocked,
                        tokens: d.tokens,
                    },
                }),
        );
        Ok(Some(rows))
    }
}

fn add(into: &mut SpendTotals, t: &SpendTotals) {
    into.dollars += t.dollars;
    into.requests += t.requests;
    into.blocked += t.blocked;
    into.tokens += t.tokens;
}

/// What `store::stats::stats` reads from the table, made from roll-up rows: totals since
/// `today` and `month` (YYYY-MM-DD) and all time, and all-time spend by model and by each of
/// `budgets` (name, id).
pub fn stats_of(rows: &[DayRow], today: &str, month: &str, budgets: &[(String, i64)]) -> Stats {
    let mut stats = Stats {
        today: SpendTotals::default(),
        this_month: SpendTotals::default(),
        all_time: SpendTotals::default(),
        by_model: Vec::new(),
        by_budget: Vec::new(),
    };
    let mut by_model: HashMap<&str, SpendTotals> = HashMap::new();
    let mut by_budget: HashMap<&str, SpendTotals> = HashMap::new();
    for r in rows {
        add(&mut stats.all_time, &r.totals);
        if r.day.as_str() >= month {
            add(&mut stats.this_month, &r.totals);
        }
        if r.day.as_str() >= today {
            add(&mut stats.today, &r.totals);
        }
        add(by_model.entry(&r.model).or_default(), &r.totals);
        add(by_budget.entry(&r.budget).or_default(), &r.totals);
    }
    stats.by_model = by_model
        .into_iter()
        .map(|(model, totals)| ModelSpend {
            model: model.to_string(),
            totals,
        })
        .collect();
    stats
        .by_model
        .sort_by(|a, b| (b.totals.dollars, &a.model).cmp(&(a.totals.dollars, &b.model)));
    stats.by_budget = budgets
        .iter()
        .map(|(name, id)| BudgetSpend {
            budget: name.clone(),
            budget_id: *id,
            totals: by_budget.get(name.as_str()).cloned().unwrap_or_default(),
        })
        .collect();
    stats
        .by_budget
        .sort_by(|a, b| (b.totals.dollars, a.budget_id).cmp(&(a.totals.dollars, b.budget_id)));
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Money;

    fn row(day: &str, budget: &str, model: &str, dollars: &str, blocked: u64) -> DayRow {
        DayRow {
            day: day.into(),
            budget: budget.into(),
            model: model.into(),
            totals: SpendTotals {
                dollars: Money::parse(dollars).unwrap(),
                requests: 1,
                blocked,
                tokens: 10,
            },
        }
    }

    #[test]
    fn rows_add_up_by_day_model_and_budget_like_the_table() {
        let rows = [
            row("2026-11-30", "team", "haiku", "1", 0),
            row("2026-12-01", "team", "sonnet", "2", 1),
            row("2026-12-03", "default", "haiku", "4", 0),
        ];
        let budgets = [
            ("default".to_string(), 1),
            ("team".to_string(), 2),
            ("idle".to_string(), 3),
        ];
        let s = stats_of(&rows, "2026-12-03", "2026-12-01", &budgets);
        let dollars = |t: &SpendTotals| t.dollars.to_string();
        assert_eq!(dollars(&s.today), "4");
        assert_eq!(
            (dollars(&s.this_month), s.this_month.blocked),
            ("6".into(), 1)
        );
        assert_eq!(
            (dollars(&s.all_time), s.all_time.requests, s.all_time.tokens),
            ("7".into(), 3, 30)
        );
        let models: Vec<_> = s
            .by_model
            .iter()
            .map(|m| (m.model.as_str(), dollars(&m.totals)))
            .collect();
        assert_eq!(models, [("haiku", "5".into()), ("sonnet", "2".into())]);
        let budgets: Vec<_> = s
            .by_budget
            .iter()
            .map(|b| (b.budget.as_str(), dollars(&b.totals)))
            .collect();
        assert_eq!(
            budgets,
            [
                ("default", "4".into()),
                ("team", "3".into()),
                ("idle", "0".into())
            ]
        );
    }
}
