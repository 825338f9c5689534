//! The one read model of spend statistics: totals and charts made from roll-up rows (a
//! budget's totals on one model on one local day), whether the rows come from this proxy's
//! SQLite or from the team database.

use crate::money::Money;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use ts_rs::TS;

/// Dollars and counts over a span of time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct SpendTotals {
    pub dollars: Money,
    /// Forwarded requests; blocked ones are counted only in `blocked`.
    pub requests: u64,
    pub blocked: u64,
    pub tokens: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct ModelSpend {
    pub model: String,
    #[serde(flatten)]
    pub totals: SpendTotals,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct BudgetSpend {
    pub budget: String,
    pub budget_id: i64,
    #[serde(flatten)]
    pub totals: SpendTotals,
}

/// `GET /api/stats`. `by_model` and `by_budget` are all-time.
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct Stats {
    pub today: SpendTotals,
    pub this_month: SpendTotals,
    pub all_time: SpendTotals,
    pub by_model: Vec<ModelSpend>,
    pub by_budget: Vec<BudgetSpend>,
}

/// One line of a chart: a budget's or a model's spend per day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct Series {
    pub name: String,
    /// Dollars per day, aligned with `SpendSeries::days`.
    pub dollars: Vec<Money>,
}

/// `GET /api/spend?days=30`: spend per local day, by budget and by model.
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct SpendSeries {
    /// `YYYY-MM-DD`, oldest first, ending today.
    pub days: Vec<String>,
    pub by_budget: Vec<Series>,
    pub by_model: Vec<Series>,
}

/// A budget's totals on one model on one local day: what both books hold, and all that the
/// statistics are made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayRow {
    /// YYYY-MM-DD.
    pub day: String,
    pub budget: String,
    pub model: String,
    pub totals: SpendTotals,
}

impl SpendTotals {
    fn add(&mut self, t: &SpendTotals) {
        self.dollars += t.dollars;
        self.requests = self.requests.saturating_add(t.requests);
        self.blocked = self.blocked.saturating_add(t.blocked);
        self.tokens = self.tokens.saturating_add(t.tokens);
    }
}

impl Stats {
    /// Totals since `today` and `month` (YYYY-MM-DD) and all time, and all-time spend by model
    /// and by each of `budgets` (name, id), dearest first.
    pub fn of(rows: &[DayRow], today: &str, month: &str, budgets: &[(String, i64)]) -> Stats {
        let (mut today_t, mut month_t, mut all) = Default::default();
        let mut by_model: HashMap<&str, SpendTotals> = HashMap::new();
        let mut by_budget: HashMap<&str, SpendTotals> = HashMap::new();
        for r in rows {
            SpendTotals::add(&mut all, &r.totals);
            if r.day.as_str() >= month {
                SpendTotals::add(&mut month_t, &r.totals);
            }
            if r.day.as_str() >= today {
                SpendTotals::add(&mut today_t, &r.totals);
            }
            by_model.entry(&r.model).or_default().add(&r.totals);
            by_budget.entry(&r.budget).or_default().add(&r.totals);
        }
        let mut by_model: Vec<ModelSpend> = by_model
            .into_iter()
            .map(|(model, totals)| ModelSpend {
                model: model.to_string(),
                totals,
            })
            .collect();
        by_model.sort_by(|a, b| (b.totals.dollars, &a.model).cmp(&(a.totals.dollars, &b.model)));
        let mut by_budget: Vec<BudgetSpend> = budgets
            .iter()
            .map(|(name, id)| BudgetSpend {
                budget: name.clone(),
                budget_id: *id,
                totals: by_budget.get(name.as_str()).cloned().unwrap_or_default(),
            })
            .collect();
        by_budget
            .sort_by(|a, b| (b.totals.dollars, a.budget_id).cmp(&(a.totals.dollars, b.budget_id)));
        Stats {
            today: today_t,
            this_month: month_t,
            all_time: all,
            by_model,
            by_budget,
        }
    }
}

impl SpendSeries {
    /// Spend per day of `days` (YYYY-MM-DD, oldest first), by budget and by model; rows on
    /// other days are left out.
    pub fn of(rows: &[DayRow], days: Vec<String>) -> SpendSeries {
        let mut by_budget: BTreeMap<&str, Vec<Money>> = BTreeMap::new();
        let mut by_model: BTreeMap<&str, Vec<Money>> = BTreeMap::new();
        for r in rows {
            let Some(i) = days.iter().position(|d| *d == r.day) else {
                continue;
            };
            for (map, key) in [(&mut by_budget, &r.budget), (&mut by_model, &r.model)] {
                map.entry(key)
                    .or_insert_with(|| vec![Money::ZERO; days.len()])[i] += r.totals.dollars;
            }
        }
        let series = |m: BTreeMap<&str, Vec<Money>>| {
            m.into_iter()
                .map(|(name, dollars)| Series {
                    name: name.to_string(),
                    dollars,
                })
                .collect()
        };
        SpendSeries {
            days,
            by_budget: series(by_budget),
            by_model: series(by_model),
        }
    }
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
        let s = Stats::of(&rows, "2026-12-03", "2026-12-01", &budgets);
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
