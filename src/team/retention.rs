//! Retention of the team's records: charges (`team_usage`) and delivered or abandoned webhook
//! attempts (`team_outbox`) older than the retention period go, like the local usage records,
//! and subscription credentials not seen for 8 days.
//! Spend, reservations and daily totals live in their own tables and never change because of it.

use super::{Team, TeamError, unreachable};

impl Team {
    /// Deletes team charges and outbox rows created before `cutoff_ms`, and credentials not
    /// seen for 8 days; returns how many went.
    /// (A charge's row also makes a retried settlement idempotent; retries come within
    /// seconds, retention is at least a day.)
    pub async fn sweep(&self, cutoff_ms: i64) -> Result<u64, TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            let usage = client
                .execute(
                    "DELETE FROM team_usage WHERE created_at < $1",
                    &[&cutoff_ms],
                )
                .await
                .map_err(unreachable)?;
            let outbox = client
                .execute(
                    "DELETE FROM team_outbox WHERE created_at < $1",
                    &[&cutoff_ms],
                )
                .await
                .map_err(unreachable)?;
            // Credentials not seen for over 8 days: their windows (5 hours, a week) are over.
            let windows = client
                .execute(
                    "DELETE FROM team_subscriptions
                     WHERE seen_at < extract(epoch FROM now())::BIGINT - 8 * 86400",
                    &[],
                )
                .await
                .map_err(unreachable)?;
            Ok(usage + outbox + windows)
        })
        .await
    }
}
