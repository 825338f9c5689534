//! Spend across all proxies: reserving a request's worst case on every scope of its chain,
//! settling its charge, and reading the figures, each in one statement.

use super::{
    Ask, Charge, Hold, Refused, Scope, Shared, Team, TeamError, col, shared, to_i64, unreachable,
};
use crate::money::Money;
use std::sync::Arc;

/// Makes a scope's row for a period, starting from what the team was charged in it: a period
/// changed mid-way (daily to monthly, say) keeps the spend it already had, and a budget's row
/// counts its whole subtree's charges (`$3`: its name and its descendants'), each since its own
/// budget was last made; a key's (`$4`: its hash) the charges that name it. `$2` is the
/// period's start (0 for a total budget: every charge). The charges are summed only when the
/// row is missing. Holds still on the row's scope and period (it was dropped after a move while
/// requests were in flight) stay reserved on it: they are freed from it when they settle.
const OPEN_PERIOD: &str =
    "INSERT INTO team_spend (budget, period_start, spent, spent_tokens, requests, reserved,
    reserved_tokens)
  SELECT $1, $2, LEAST(COALESCE(SUM(u.cost), 0), 9223372036854775807)::BIGINT,
    LEAST(COALESCE(SUM(u.tokens), 0), 9223372036854775807)::BIGINT, COUNT(u.id),
    (SELECT LEAST(COALESCE(SUM(r.amount), 0), 9223372036854775807)::BIGINT
       FROM team_reservations r WHERE r.budget = $1 AND r.period_start = $2),
    (SELECT LEAST(COALESCE(SUM(r.tokens), 0), 9223372036854775807)::BIGINT
       FROM team_reservations r WHERE r.budget = $1 AND r.period_start = $2)
  FROM team_usage u
  WHERE u.created_at >= $2
    AND CASE WHEN $4::TEXT IS NULL
      THEN u.budget = ANY($3::TEXT[])
        AND u.created_at >= COALESCE((SELECT since FROM team_budgets b WHERE b.name = u.budget), 0)
      ELSE u.key_hash = $4 END
    AND NOT EXISTS (SELECT 1 FROM team_spend s WHERE s.budget = $1 AND s.period_start = $2)
  ON CONFLICT DO NOTHING";

/// The functions of migration 0008: all scopes of a request at once, locks in one order.
const RESERVE: &str =
    "SELECT hold, refused, missing FROM team_reserve($1, $2, $3, $4, $5, $6, $7, $8)";
const SETTLE: &str =
    "SELECT scope, spent FROM team_settle($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
const SHRINK: &str = "SELECT team_shrink($1, $2, $3)";

const TOTALS: &str = "SELECT spent, spent_tokens, reserved, reserved_tokens, requests
  FROM team_spend WHERE budget = $1 AND period_start = $2";

/// The prefix of a key's scope in the team database (budget names cannot contain ':').
pub const KEY_SCOPE: &str = "key:";

type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

impl Team {
    /// Reserves the request's worst case on every scope of its chain if it fits all of their
    /// caps across all proxies; otherwise says which scope refused and what it stands at.
    pub async fn reserve(
        self: &Arc<Self>,
        ask: Ask<'_>,
    ) -> Result<Result<Hold, Refused>, TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            let reserve = client.prepare_cached(RESERVE).await.map_err(unreachable)?;
            let scopes = ask.scopes;
            let names: Vec<&str> = scopes.iter().map(|s| s.name.as_str()).collect();
            let periods: Vec<i64> = scopes.iter().map(|s| s.period).collect();
            let caps: Vec<Option<i64>> = scopes
                .iter()
                .map(|s| s.max_dollars.map(Money::picos))
                .collect();
            let token_caps: Vec<Option<i64>> =
                scopes.iter().map(|s| s.max_tokens.map(to_i64)).collect();
            let (amount, tokens) = (ask.amount.picos(), to_i64(ask.tokens));
            let lease_ms = self.lease.as_millis() as i64;
            let args: [Param; 8] = [
                &names,
                &periods,
                &amount,
                &tokens,
                &caps,
                &token_caps,
                &self.proxy,
                &lease_ms,
            ];
            // Each scope's period row is opened at most once (by this call).
            for _ in 0..=scopes.len() {
                let row = client
                    .query_one(&reserve, &args)
                    .await
                    .map_err(unreachable)?;
                let at = |i: usize| -> Result<Option<usize>, TeamError> {
                    let n: Option<i32> = col(&row, i)?;
                    Ok(n.and_then(|n| usize::try_from(n).ok()?.checked_sub(1)))
                };
                if let Some(id) = col::<Option<i64>>(&row, 0)? {
                    self.live().insert(id);
                    return Ok(Ok(Hold::new(self.clone(), id, ask)));
                }
                if let Some(i) = at(1)?.filter(|&i| i < scopes.len()) {
                    let shared = self.totals_with(&client, names[i], periods[i]).await?;
                    return Ok(Err(Refused {
                        index: i,
                        shared: shared.unwrap_or_default(),
                    }));
                }
                let Some(i) = at(2)?.filter(|&i| i < scopes.len()) else {
                    break;
                };
                self.open(&client, &scopes[i], ask.subtree).await?;
            }
            Err(TeamError::Unreachable(
                "its team_spend table lost a row as it was written".into(),
            ))
        })
        .await
    }

    /// Makes a scope's row for its period from the team's charges.
    async fn open(
        &self,
        client: &deadpool_postgres::Object,
        scope: &Scope,
        subtree: &(dyn Fn(&str) -> Vec<String> + Sync),
    ) -> Result<(), TeamError> {
        let open = client
            .prepare_cached(OPEN_PERIOD)
            .await
            .map_err(unreachable)?;
        let (budgets, key) = match scope.name.strip_prefix(KEY_SCOPE) {
            Some(hash) => (Vec::new(), Some(hash)),
            None => (subtree(&scope.name), None),
        };
        client
            .execute(&open, &[&scope.name, &scope.period, &budgets, &key])
            .await
            .map_err(unreachable)?;
        Ok(())
    }

    /// Frees the hold on every scope it was taken on, charges the cost on the charge's scopes
    /// (the chain as it is now) and writes the record, in one transaction;
    /// returns each scope's spend after it (none if an earlier try already committed it). On
    /// an error the hold comes back, still renewed, to try again.
    pub async fn settle(
        &self,
        hold: Hold,
        charge: &Charge,
    ) -> Result<Vec<(String, Money)>, (Hold, TeamError)> {
        let done = self
            .bounded(async {
                let client = self.client().await?;
                let settle = client.prepare_cached(SETTLE).await.map_err(unreachable)?;
                let (names, periods): (Vec<&str>, Vec<i64>) =
                    charge.scopes.iter().map(|(n, p)| (n.as_str(), *p)).unzip();
                let ((budget, period), key) = (charge.budget(), hold.key());
                let args: [Param; 13] = [
                    &hold.id,
                    &names,
                    &periods,
                    &budget,
                    &period,
                    &key,
                    &charge.cost.picos(),
                    &to_i64(charge.tokens),
                    &charge.created_at,
                    &self.proxy,
                    &charge.model,
                    &charge.upstream_request_id,
                    &charge.day,
                ];
                let rows = client.query(&settle, &args).await.map_err(unreachable)?;
                rows.iter()
                    .map(|r| Ok((col(r, 0)?, Money::from_picos(col(r, 1)?))))
                    .collect()
            })
            .await;
        done.map_err(|e| (hold, e))
    }

    /// Drops these budgets' figures, to be counted again from the team's records when next
    /// reserved on (a budget moved, and its old and new ancestors' subtrees changed).
    pub async fn reopen(&self, budgets: &[String]) -> Result<(), TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute("DELETE FROM team_spend WHERE budget = ANY($1)", &[&budgets])
                .await
                .map_err(unreachable)?;
            Ok(())
        })
        .await
    }

    /// Lowers a held reservation, on every scope, to what the request can still cost.
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
