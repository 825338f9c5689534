//! Subscription windows across the team: each credential's last state, the newest any proxy
//! saw, and a claim on each window alert so that one proxy raises it.

use super::{Team, TeamError, col, unreachable};

/// A credential's state as the service keeps it: (account, state as JSON, seen at in epoch
/// seconds).
pub type State = (String, String, i64);

impl Team {
    /// Shares states; each replaces the team's only if it is newer.
    pub async fn put_windows(&self, states: &[State]) -> Result<(), TeamError> {
        if states.is_empty() {
            return Ok(());
        }
        let accounts: Vec<&str> = states.iter().map(|s| s.0.as_str()).collect();
        let texts: Vec<&str> = states.iter().map(|s| s.1.as_str()).collect();
        let seen: Vec<i64> = states.iter().map(|s| s.2).collect();
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO team_subscriptions (account, state, seen_at)
                     SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[])
                     ON CONFLICT (account) DO UPDATE
                       SET state = EXCLUDED.state, seen_at = EXCLUDED.seen_at
                       WHERE team_subscriptions.seen_at < EXCLUDED.seen_at",
                    &[&accounts, &texts, &seen],
                )
                .await
                .map_err(unreachable)?;
            Ok(())
        })
        .await
    }

    /// The states seen at `since` (epoch seconds) or later: the newest 64 (as many as a proxy
    /// keeps).
    pub async fn windows_since(&self, since: i64) -> Result<Vec<State>, TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT account, state, seen_at FROM team_subscriptions
                     WHERE seen_at >= $1 ORDER BY seen_at DESC LIMIT 64",
                    &[&since],
                )
                .await
                .map_err(unreachable)?;
            rows.iter()
                .map(|r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?)))
                .collect()
        })
        .await
    }

    /// Claims a window alert (its window's reset in epoch seconds, 0 if unknown): true for
    /// the one proxy of the team that is to raise it.
    pub async fn claim_window_alert(
        &self,
        account: &str,
        window: &str,
        resets_at: i64,
        threshold: u8,
    ) -> Result<bool, TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT team_claim_window_alert($1, $2, $3, $4)",
                    &[&account, &window, &resets_at, &i32::from(threshold)],
                )
                .await
                .map_err(unreachable)?;
            col(&row, 0)
        })
        .await
    }
}
