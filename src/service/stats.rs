//! Spend statistics (the one read model, `record::stats`, over this proxy's or the team's
//! roll-up rows) and settings.

use super::Service;
use crate::budget::DEFAULT_BUDGET;
use crate::budget::period::{self, Period, Zone};
use crate::config::BASE_PATH;
use crate::dto::Settings;
use crate::error::HttpError;
use crate::record::stats::{DayRow, SpendSeries, SpendTotals, Stats};
use crate::store;
use crate::team::Team;

impl Service {
    /// The roll-up rows the statistics are made of: on a team, the team's for each shared
    /// budget this proxy has and this proxy's own for `default` (docs/team.md); alone, or while
    /// the team database cannot say, this proxy's own.
    async fn day_rows(&self) -> Result<Vec<DayRow>, HttpError> {
        if let Some(team) = &self.team
            && let Some(rows) = self.team_rows(team).await?
        {
            return Ok(rows);
        }
        Ok(self.store.read(|c| store::stats::day_rows(c, None)).await?)
    }

    /// The roll-up rows of the team's figures: the team's for each shared budget this proxy
    /// has, this proxy's own for `default`. None while the team database cannot say (the
    /// overview then shows this proxy's own figures).
    async fn team_rows(&self, team: &Team) -> Result<Option<Vec<DayRow>>, HttpError> {
        let shared = match team.daily().await {
            Ok(days) => days,
            Err(e) => {
                tracing::debug!("the team's daily totals are not available: {e}");
                return Ok(None);
            }
        };
        let mut rows = self
            .store
            .read(|c| store::stats::day_rows(c, Some(DEFAULT_BUDGET)))
            .await?;
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

    /// Totals for today, this month and all time, and all-time spend by model and budget.
    pub async fn stats(&self) -> Result<Stats, HttpError> {
        let now = period::now();
        let zone = self.config.zone;
        let today = zone.day(now).to_string();
        let month = zone
            .day(period::window(Period::Monthly, now, now, zone).start)
            .to_string();
        let rows = self.day_rows().await?;
        let budgets: Vec<(String, i64)> = self
            .ledger
            .statuses(now)
            .into_iter()
            .map(|s| (s.budget.name, s.budget.id))
            .collect();
        Ok(Stats::of(&rows, &today, &month, &budgets))
    }

    /// Spend per day over the last `days` days (today included), by budget and by model.
    pub async fn spend_series(&self, days: u32) -> Result<SpendSeries, HttpError> {
        let days = days.clamp(1, 366);
        let today = self.config.zone.day(period::now());
        let first = today - chrono::Duration::days(i64::from(days) - 1);
        let labels: Vec<String> = (0..days)
            .map(|i| (first + chrono::Duration::days(i64::from(i))).to_string())
            .collect();
        Ok(SpendSeries::of(&self.day_rows().await?, labels))
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
