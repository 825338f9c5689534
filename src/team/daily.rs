//! The team's daily totals: what every proxy's overview and spend chart show on a team.

use super::{Team, TeamError, col, unreachable};
use crate::money::Money;

/// A budget's spend on one model on one local day, across all proxies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TeamDay {
    /// YYYY-MM-DD.
    pub day: String,
    pub budget: String,
    pub model: String,
    pub dollars: Money,
    pub tokens: u64,
    pub requests: u64,
    pub blocked: u64,
}

impl Team {
    /// Counts a refused request in the team's daily totals.
    pub async fn count_blocked(
        &self,
        day: &str,
        budget: &str,
        model: &str,
    ) -> Result<(), TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO team_daily (day, budget, model, blocked) VALUES ($1, $2, $3, 1)
                     ON CONFLICT (day, budget, model) DO UPDATE SET blocked = team_daily.blocked + 1",
                    &[&day, &budget, &model],
                )
                .await
                .map_err(unreachable)?;
            Ok(())
        })
        .await
    }

    /// Every day's totals (a row per day, budget and model: a few thousand a year).
    pub async fn daily(&self) -> Result<Vec<TeamDay>, TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT day, budget, model, dollars, tokens, requests, blocked FROM team_daily",
                    &[],
                )
                .await
                .map_err(unreachable)?;
            let n = |r: &tokio_postgres::Row, i| -> Result<u64, TeamError> {
                Ok(col::<i64>(r, i)?.max(0) as u64)
            };
            rows.iter()
                .map(|r| {
                    Ok(TeamDay {
                        day: col(r, 0)?,
                        budget: col(r, 1)?,
                        model: col(r, 2)?,
                        dollars: Money::from_picos(col(r, 3)?),
                        tokens: n(r, 4)?,
                        requests: n(r, 5)?,
                        blocked: n(r, 6)?,
                    })
                })
                .collect()
        })
        .await
    }
}
