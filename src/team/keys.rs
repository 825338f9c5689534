//! The team's virtual keys: each proxy keeps its own table of keys (by hash) and follows this
//! one, so a key made or revoked on any proxy is made or revoked on all.

use super::{Team, TeamError, col, unreachable};
use crate::budget::period::Period;
use crate::money::Money;

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
    /// A Claude Code sign-in's token, not a virtual key (the `kind` column: "sign_in").
    pub sign_in: bool,
    /// A sign-in's refresh token's SHA-256.
    pub refresh_hash: Option<String>,
    /// Its own cap and period: a scope below its budget on every proxy.
    pub cap: Option<(Money, Period)>,
    /// A refreshed sign-in's lineage: its first token's hash.
    pub lineage: Option<String>,
}

impl Team {
    /// Shares a key, or its revocation; a revoked key stays revoked whatever is put later.
    /// True when this call revoked it: of proxies revoking one key at once, exactly one is
    /// told so (spending a refresh token counts on it).
    pub async fn put_key(&self, key: &TeamKey) -> Result<bool, TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            if key.revoked {
                // Under READ COMMITTED a second revoker waits for the first's row lock, then
                // finds `revoked_at` set and updates nothing.
                let revoked = client
                    .execute(
                        "UPDATE team_keys SET revoked_at = now() WHERE hash = $1 AND revoked_at IS NULL",
                        &[&key.hash],
                    )
                    .await
                    .map_err(unreachable)?;
                if revoked == 1 {
                    return Ok(true);
                }
            }
            let inserted = client
                .execute(
                    "INSERT INTO team_keys
                       (hash, budget, name, created_at, revoked_at, kind, refresh_hash, max_dollars,
                        period, lineage)
                     VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN now() END, $6, $7, $8, $9, $10)
                     ON CONFLICT (hash) DO NOTHING",
                    &[
                        &key.hash,
                        &key.budget,
                        &key.name,
                        &key.created_at,
                        &key.revoked,
                        &if key.sign_in { "sign_in" } else { "key" },
                        &key.refresh_hash,
                        &key.cap.map(|(m, _)| m.picos()),
                        &key.cap.map(|(_, p)| p.as_str()),
                        &key.lineage,
                    ],
                )
                .await
                .map_err(unreachable)?;
            Ok(key.revoked && inserted == 1)
        })
        .await
    }

    /// Changes (or with None takes away) a live key's own cap for every proxy; false when the
    /// team has no live key of that hash (another proxy revoked it).
    pub async fn set_key_cap(
        &self,
        hash: &str,
        cap: Option<(Money, Period)>,
    ) -> Result<bool, TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            let changed = client
                .execute(
                    "UPDATE team_keys SET max_dollars = $2, period = $3
                     WHERE hash = $1 AND revoked_at IS NULL",
                    &[
                        &hash,
                        &cap.map(|(m, _)| m.picos()),
                        &cap.map(|(_, p)| p.as_str()),
                    ],
                )
                .await
                .map_err(unreachable)?;
            Ok(changed == 1)
        })
        .await
    }

    /// A key's own cap as the team has it (None: the team has no such key). A proxy may not
    /// yet have followed a change another made.
    pub async fn key_cap(&self, hash: &str) -> Result<Option<Option<(Money, Period)>>, TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT max_dollars, period FROM team_keys WHERE hash = $1",
                    &[&hash],
                )
                .await
                .map_err(unreachable)?;
            row.map(|r| Ok(cap(col(&r, 0)?, col(&r, 1)?))).transpose()
        })
        .await
    }

    /// Every key the team has had.
    pub async fn keys(&self) -> Result<Vec<TeamKey>, TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT hash, budget, name, created_at, revoked_at IS NOT NULL, kind, refresh_hash,
                       max_dollars, period, lineage FROM team_keys",
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
                        sign_in: col::<String>(r, 5)? == "sign_in",
                        refresh_hash: col(r, 6)?,
                        cap: cap(col(r, 7)?, col(r, 8)?),
                        lineage: col(r, 9)?,
                    })
                })
                .collect()
        })
        .await
    }
}

/// A cap from its two columns (none unless both are set).
fn cap(max_dollars: Option<i64>, period: Option<String>) -> Option<(Money, Period)> {
    Some((
        Money::from_picos(max_dollars?),
        Period::parse(&period?).unwrap_or_default(),
    ))
}
