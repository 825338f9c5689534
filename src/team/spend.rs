//! A budget's spend across all proxies: reserving a request's worst case, settling its
//! charge, and reading the figures, each in one statement.

use super::{Ask, Charge, Hold, Shared, Team, TeamError, col, shared, to_i64, unreachable};
use crate::money::Money;
use std::sync::Arc;

const RESERVE: &str = "WITH taken AS (
    UPDATE team_spend SET reserved = reserved + $3, reserved_tokens = reserved_tokens + $4
    WHERE budget = $1 AND period_start = $2
      AND ($5::BIGINT IS NULL OR spent + reserved + $3 <= $5)
      AND ($6::BIGINT IS NULL OR spent_tokens + reserved_tokens + $4 <= $6)
    RETURNING budget)
  INSERT INTO team_reservations (budget, period_start, amount, tokens, proxy, lease_until)
  SELECT $1, $2, $3, $4, $7, now() + $8::BIGINT * interval '1 millisecond' FROM taken
  RETURNING id";

/// Makes a budget's row for a period, starting from what the team was charged in it since
/// the budget was made: a period changed mid-way (daily to monthly, say) keeps the spend it
/// already had. `$2` is the period's start (0 for a total budget: every charge). The charges
/// are summed only when the row is missing.
const OPEN_PERIOD: &str =
    "INSERT INTO team_spend (budget, period_start, spent, spent_tokens, requests)
  SELECT $1, $2, LEAST(COALESCE(SUM(u.cost), 0), 9223372036854775807)::BIGINT,
    LEAST(COALESCE(SUM(u.tokens), 0), 9223372036854775807)::BIGINT, COUNT(u.id)
  FROM team_usage u
  WHERE u.budget = $1 AND u.created_at >= $2
    AND u.created_at >= COALESCE((SELECT since FROM team_budgets WHERE name = $1), 0)
    AND NOT EXISTS (SELECT 1 FROM team_spend s WHERE s.budget = $1 AND s.period_start = $2)
  ON CONFLICT DO NOTHING";

/// Charges the cost once (a retry after a lost answer finds the record and changes nothing),
/// and frees the reservation unless its lease already expired and the sweep freed it.
const SETTLE: &str = "WITH gone AS (
    DELETE FROM team_reservations WHERE id = $1 RETURNING amount, tokens),
  moved AS (
    UPDATE team_spend SET
      reserved = reserved - COALESCE((SELECT amount FROM gone), 0),
      reserved_tokens = reserved_tokens - COALESCE((SELECT tokens FROM gone), 0),
      spent = spent + $4, spent_tokens = spent_tokens + $5, requests = requests + 1
    WHERE budget = $2 AND period_start = $3
      AND NOT EXISTS (SELECT 1 FROM team_usage WHERE reservation = $1)
    RETURNING spent),
  recorded AS (
    INSERT INTO team_usage
      (budget, period_start, created_at, proxy, model, cost, tokens, upstream_request_id, reservation)
    SELECT $2, $3, $6, $7, $8, $4, $5, $9, $1 FROM moved),
  rolled AS (
    INSERT INTO team_daily (day, budget, model, dollars, tokens, requests)
    SELECT $10, $2, $8, $4, $5, 1 FROM moved
    ON CONFLICT (day, budget, model) DO UPDATE SET dollars = team_daily.dollars + EXCLUDED.dollars,
      tokens = team_daily.tokens + EXCLUDED.tokens, requests = team_daily.requests + 1)
  SELECT spent FROM moved";

/// Lowers a reservation (never raises it) and frees the difference; a reservation already
/// settled or swept is not found and nothing changes.
const SHRINK: &str = "WITH old AS (
    SELECT id, amount, tokens FROM team_reservations WHERE id = $1 FOR UPDATE),
  lowered AS (
    UPDATE team_reservations r SET amount = LEAST(old.amount, $2), tokens = LEAST(old.tokens, $3)
    FROM old WHERE r.id = old.id
    RETURNING r.budget, r.period_start,
      old.amount - LEAST(old.amount, $2) AS freed, old.tokens - LEAST(old.tokens, $3) AS freed_tokens)
  UPDATE team_spend s
  SET reserved = s.reserved - lowered.freed, reserved_tokens = s.reserved_tokens - lowered.freed_tokens
  FROM lowered WHERE s.budget = lowered.budget AND s.period_start = lowered.period_start";

const TOTALS: &str = "SELECT spent, spent_tokens, reserved, reserved_tokens, requests
  FROM team_spend WHERE budget = $1 AND period_start = $2";

impl Team {
    /// Reserves the request's worst case if it fits every cap across all proxies; otherwise
    /// says what the budget stands at.
    pub async fn reserve(
        self: &Arc<Self>,
        ask: Ask<'_>,
    ) -> Result<Result<Hold, Shared>, TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            let ensure = client
                .prepare_cached(OPEN_PERIOD)
                .await
                .map_err(unreachable)?;
            let reserve = client.prepare_cached(RESERVE).await.map_err(unreachable)?;
            let (amount, tokens) = (ask.amount.picos(), to_i64(ask.tokens));
            let (max_dollars, max_tokens) = (
                ask.max_dollars.map(Money::picos),
                ask.max_tokens.map(to_i64),
            );
            let lease_ms = self.lease.as_millis() as i64;
            let key: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&ask.budget, &ask.period];
            let args: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
                &ask.budget,
                &ask.period,
                &amount,
                &tokens,
                &max_dollars,
                &max_tokens,
                &self.proxy,
                &lease_ms,
            ];
            // A period's row is made once; a missing one (a new database) is made again.
            for _ in 0..2 {
                let row_key = (ask.budget.to_string(), ask.period);
                if !self.rows().contains(&row_key) {
                    client.execute(&ensure, &key).await.map_err(unreachable)?;
                    let mut rows = self.rows();
                    // A budget's earlier periods are never reserved in again.
                    rows.retain(|(b, p)| b != &row_key.0 || *p >= row_key.1);
                    rows.insert(row_key.clone());
                }
                if let Some(row) = client
                    .query_opt(&reserve, &args)
                    .await
                    .map_err(unreachable)?
                {
                    let id: i64 = col(&row, 0)?;
                    self.live().insert(id);
                    return Ok(Ok(Hold {
                        team: self.clone(),
                        id,
                        budget: row_key.0,
                        period: ask.period,
                    }));
                }
                match self.totals_with(&client, ask.budget, ask.period).await? {
                    Some(shared) => return Ok(Err(shared)),
                    None => self.rows().remove(&row_key),
                };
            }
            Err(TeamError::Unreachable(
                "its team_spend table lost a row as it was written".into(),
            ))
        })
        .await
    }

    /// Swaps the reservation for the cost and writes the record, in one statement; returns
    /// the budget's spend after it (None if an earlier try already committed it). On an error
    /// the hold comes back, still renewed, to try again.
    pub async fn settle(
        &self,
        hold: Hold,
        charge: &Charge,
    ) -> Result<Option<Money>, (Hold, TeamError)> {
        let done = self
            .bounded(async {
                let client = self.client().await?;
                let settle = client.prepare_cached(SETTLE).await.map_err(unreachable)?;
                client
                    .query_opt(
                        &settle,
                        &[
                            &hold.id,
                            &hold.budget,
                            &hold.period,
                            &charge.cost.picos(),
                            &to_i64(charge.tokens),
                            &charge.created_at,
                            &self.proxy,
                            &charge.model,
                            &charge.upstream_request_id,
                            &charge.day,
                        ],
                    )
                    .await
                    .map_err(unreachable)?
                    .map(|r| col(&r, 0).map(Money::from_picos))
                    .transpose()
            })
            .await;
        done.map_err(|e| (hold, e))
    }

    /// Lowers a held reservation to what the request can still cost.
    pub async fn shrink(&self, id: i64, amount: Money, tokens: u64) -> Result<(), TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            let shrink = client.prepare_cached(SHRINK).await.map_err(unreachable)?;
            client
                .execute(&shrink, &[&id, &amount.picos(), &to_i64(tokens)])
                .await
                .map_err(unreachable)?;
            Ok(())
        })
        .await
    }

    /// A budget's period across all proxies.
    pub async fn totals(&self, budget: &str, period: i64) -> Result<Shared, TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            Ok(self
                .totals_with(&client, budget, period)
                .await?
                .unwrap_or_default())
        })
        .await
    }

    async fn totals_with(
        &self,
        client: &deadpool_postgres::Object,
        budget: &str,
        period: i64,
    ) -> Result<Option<Shared>, TeamError> {
        let totals = client.prepare_cached(TOTALS).await.map_err(unreachable)?;
        let row = client
            .query_opt(&totals, &[&budget, &period])
            .await
            .map_err(unreachable)?;
        row.as_ref().map(shared).transpose()
    }
}
