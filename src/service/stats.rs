//! Spend statistics and settings.

use super::Service;
use crate::budget::period::{self, Period, Zone};
use crate::config::BASE_PATH;
use crate::dto::{Series, Settings, SpendSeries, Stats};
use crate::error::HttpError;
use crate::money::Money;
use crate::store;
use std::collections::BTreeMap;

impl Service {
    /// Totals for today, this month and all time; on a team, the team's (docs/team.md).
    pub async fn stats(&self) -> Result<Stats, HttpError> {
        let now = period::now();
        let zone = self.config.zone;
        let today = zone.day(now);
        let month = zone.day(period::window(Period::Monthly, now, now, zone).start);
        if let Some(team) = &self.team
            && let Some(rows) = self.team_rows(team).await?
        {
            let budgets: Vec<(String, i64)> = self
                .ledger
                .statuses(now)
                .into_iter()
                .map(|s| (s.budget.name, s.budget.id))
                .collect();
            let (today, month) = (today.to_string(), month.to_string());
            return Ok(super::team_stats::stats_of(&rows, &today, &month, &budgets));
        }
        Ok(self
            .store
            .read(move |c| store::stats::stats(c, today, month))
            .await?)
    }

    /// Spend per day over the last `days` days (today included), by budget and by model; on a
    /// team, the team's.
    pub async fn spend_series(&self, days: u32) -> Result<SpendSeries, HttpError> {
        let days = days.clamp(1, 366);
        let today = self.config.zone.day(period::now());
        let first = today - chrono::Duration::days(i64::from(days) - 1);
        let labels: Vec<String> = (0..days)
            .map(|i| (first + chrono::Duration::days(i64::from(i))).to_string())
            .collect();
        let shared = match &self.team {
            Some(team) => self.team_rows(team).await?,
            None => None,
        };
        let rows = match shared {
            // Days before the first label are skipped below.
            Some(rows) => rows
                .into_iter()
                .map(|r| (r.day, r.budget, r.model, r.totals.dollars))
                .collect(),
            None => {
                self.store
                    .read(move |c| store::stats::daily_spend(c, first))
                    .await?
            }
        };
        let mut by_budget: BTreeMap<String, Vec<Money>> = BTreeMap::new();
        let mut by_model: BTreeMap<String, Vec<Money>> = BTreeMap::new();
        for (day, budget, model, dollars) in rows {
            let Some(i) = labels.iter().position(|d| *d == day) else {
                continue;
            };
            for (map, key) in [(&mut by_budget, budget), (&mut by_model, model)] {
                map.entry(key)
                    .or_insert_with(|| vec![Money::ZERO; labels.len()])[i] += dollars;
            }
        }
        let series = |m: BTreeMap<String, Vec<Money>>| {
            m.into_iter()
                .map(|(name, dollars)| Series { name, dollars })
                .collect()
        };
        Ok(SpendSeries {
            days: labels,
            by_budget: series(by_budget),
            by_model: series(by_model),
        })
    }

    pub fn settings(&self, port: u16) -> Settings {
        let host = match self.config.host {
            h if h.is_unspecified() || h.is_loopback() => "localhost".to_string(),
            std::net::IpAddr::V6(h) => format!("[{h}]"),
            h => h.to_string(),
        };
        Settings {
            webhook_secret: self.webhook_secret.clone(),
            retention_days: self.config.retention_days,
            proxy_url: format!("http://{host}:{port}{BASE_PATH}"),
            require_budget: self.config.require_budget,
            team: self.team.is_some(),
            admin_token_file: (self.config.admin_token.is_none() && !self.config.open_admin).then(
                || {
                    let path = self.config.data_dir.join(crate::admin::TOKEN_FILE);
                    path.display().to_string()
                },
            ),
            time_zone: match zone_name(self.config.zone) {
                Some(n) => n,
                None => "local".into(),
            },
        }
    }
}

fn zone_name(z: Zone) -> Option<String> {
    match z {
        Zone::Local => None,
        Zone::Named(tz) => Some(tz.name().to_string()),
    }
}
