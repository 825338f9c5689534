//! The team's virtual keys: each proxy keeps its own table of keys (by hash) and follows this
//! one, so a key made or revoked on any proxy is made or revoked on all.

use super::{Team, TeamError, col, unreachable};

/// A virtual key as the team knows it: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TeamKey {
    pub hash: String,
    /// The budget's name (the team knows budgets by name).
    pub budget: String,
    pub name: String,
    /// Epoch ms.
    pub created_at: i64,
    pub revoked: bool,
}

impl Team {
    /// Shares a key, or its revocation; a revoked key stays revoked whatever is put later.
    pub async fn put_key(&self, key: &TeamKey) -> Result<(), TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO team_keys (hash, budget, name, created_at, revoked_at)
                     VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN now() END)
                     ON CONFLICT (hash) DO UPDATE
                     SET revoked_at = COALESCE(team_keys.revoked_at, EXCLUDED.revoked_at)",
                    &[
                        &key.hash,
                        &key.budget,
                        &key.name,
                        &key.created_at,
                        &key.revoked,
                    ],
                )
                .await
                .map_err(unreachable)?;
            Ok(())
        })
        .await
    }

    /// Every key the team has had.
    pub async fn keys(&self) -> Result<Vec<TeamKey>, TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT hash, budget, name, created_at, revoked_at IS NOT NULL FROM team_keys",
                    &[],
                )
                .await
                .map_err(unreachable)?;
            rows.iter()
                .map(|r| {
                    Ok(TeamKey {
                        hash: col(r, 0)?,
                        budget: col(r, 1)?,
                        name: col(r, 2)?,
                        created_at: col(r, 3)?,
                        revoked: col(r, 4)?,
                    })
                })
                .collect()
        })
        .await
    }
}
