//! The team's webhook outbox and signing secret: a team alert's delivery waits in PostgreSQL
//! until a proxy takes it for a lease, so each is made once, by whichever proxy is there.

use super::{Team, TeamError, col, unreachable};

/// How long a proxy holds a webhook delivery it took (an attempt is bounded well within it).
const DELIVERY_LEASE_SECS: i64 = 120;

/// A webhook delivery of the team's outbox, taken by this proxy.
#[derive(Clone, Debug)]
pub struct Queued {
    pub claim: String,
    pub webhook_url: String,
    pub payload: String,
    /// Epoch ms: when the alert was raised (retries give up a day later).
    pub created_at: i64,
    pub attempts: u32,
}

impl Team {
    /// The team's webhook signing secret: the first proxy's own, for every proxy.
    pub async fn secret(&self, own: &str) -> Result<String, TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO team_secret (id, secret) VALUES (1, $1) ON CONFLICT DO NOTHING",
                    &[&own],
                )
                .await
                .map_err(unreachable)?;
            let row = client
                .query_one("SELECT secret FROM team_secret WHERE id = 1", &[])
                .await
                .map_err(unreachable)?;
            col(&row, 0)
        })
        .await
    }

    /// Puts an alert's webhook delivery in the team's outbox (once per claim).
    pub async fn enqueue(
        &self,
        claim: &str,
        url: &str,
        payload: &str,
        created_at: i64,
    ) -> Result<(), TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO team_outbox (claim, webhook_url, payload, created_at)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[&claim, &url, &payload, &created_at],
                )
                .await
                .map_err(unreachable)?;
            Ok(())
        })
        .await
    }

    /// Takes the deliveries that are due and nobody holds, for a lease.
    pub async fn due(&self) -> Result<Vec<Queued>, TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "UPDATE team_outbox SET lease_until = now() + $1::BIGINT * interval '1 second'
                     WHERE claim IN (
                       SELECT claim FROM team_outbox
                       WHERE NOT done AND next_attempt_at <= now()
                         AND (lease_until IS NULL OR lease_until < now())
                       ORDER BY next_attempt_at LIMIT 16 FOR UPDATE SKIP LOCKED)
                     RETURNING claim, webhook_url, payload, created_at, attempts",
                    &[&DELIVERY_LEASE_SECS],
                )
                .await
                .map_err(unreachable)?;
            rows.iter()
                .map(|r| {
                    Ok(Queued {
                        claim: col(r, 0)?,
                        webhook_url: col(r, 1)?,
                        payload: col(r, 2)?,
                        created_at: col(r, 3)?,
                        attempts: col::<i32>(r, 4)?.max(0) as u32,
                    })
                })
                .collect()
        })
        .await
    }

    /// Records an attempt: done (delivered, or given up), or due again at `next` (epoch ms).
    pub async fn attempted(&self, claim: &str, next: Option<i64>) -> Result<(), TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute(
                    "UPDATE team_outbox SET attempts = attempts + 1, lease_until = NULL,
                       done = $2::BIGINT IS NULL,
                       next_attempt_at = COALESCE(to_timestamp($2::BIGINT / 1000.0), next_attempt_at)
                     WHERE claim = $1",
                    &[&claim, &next],
                )
                .await
                .map_err(unreachable)?;
            Ok(())
        })
        .await
    }
}
