//! Team budgets: one budget enforced by several proxies through PostgreSQL. Each admitted
//! request's worst case is reserved in one conditional statement, so two proxies can never
//! both take the last headroom; settlement swaps the reservation for the cost and writes the
//! record in one statement. Reservations carry a lease that their proxy renews while it runs:
//! a proxy that dies leaves reservations that expire instead of holding the budget forever.
//! The bounds and choices are in docs/team.md.

use crate::budget::period::{Period, Window};
use crate::money::Money;
use deadpool_postgres::{Pool, Runtime};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

mod daily;
mod keys;
mod outbox;
mod retention;
mod spend;
pub mod windows;
pub use daily::TeamDay;
pub use keys::TeamKey;
pub use outbox::Queued;
pub use spend::KEY_SCOPE;

/// The longest any one call may take: an unanswered database fails the request, closed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TeamError {
    #[error("the team database is unreachable ({0})")]
    Unreachable(String),
    #[error("the team database's tables cannot be set up ({0})")]
    Schema(String),
}

/// The tables, one migration a version (docs/team.md).
const MIGRATIONS: [&str; 11] = [
    include_str!("migrations/0001_team.sql"),
    include_str!("migrations/0002_budgets.sql"),
    include_str!("migrations/0003_outbox.sql"),
    include_str!("migrations/0004_keys.sql"),
    include_str!("migrations/0005_daily.sql"),
    include_str!("migrations/0006_since.sql"),
    include_str!("migrations/0007_sign_ins.sql"),
    include_str!("migrations/0008_scopes.sql"),
    include_str!("migrations/0009_key_lineage.sql"),
    include_str!("migrations/0010_settle_where_now.sql"),
    include_str!("migrations/0011_windows.sql"),
];

fn unreachable(e: impl std::error::Error) -> TeamError {
    TeamError::Unreachable(cause(&e))
}

/// An error with its causes: tokio-postgres says "error connecting to server" or "db error"
/// and keeps the reason ("Connection refused", the server's message) in its source.
fn cause(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// The team database's key for a budget's period: total budgets have one period, whenever
/// each proxy created its copy.
pub fn period_key(period: Period, window: &Window) -> i64 {
    match period {
        Period::Total => 0,
        _ => window.start.timestamp_millis(),
    }
}

/// One scope of a request's chain as the team database keeps it: a budget, or a key's own cap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// Its row's name: the budget's, or `key:<its hash>` (`KEY_SCOPE`).
    pub name: String,
    /// The period's start in epoch ms; 0 for a total budget (proxies created it at different
    /// instants, but it is one period).
    pub period: i64,
    pub max_dollars: Option<Money>,
    pub max_tokens: Option<u64>,
}

/// What one request asks of its chain of shared scopes.
#[derive(Clone, Copy)]
pub struct Ask<'a> {
    /// The chain, nearest first; the first budget among them is the one charged.
    pub scopes: &'a [Scope],
    pub amount: Money,
    pub tokens: u64,
    /// A budget's name and its descendants' (a budget's spend is its subtree's), asked only
    /// when a period's row is opened.
    pub subtree: &'a (dyn Fn(&str) -> Vec<String> + Sync),
    /// The lineage of the key the request came with (its first key's hash), which the record
    /// names whether or not the key has a cap of its own: a cap set later counts it.
    pub key: Option<&'a str>,
}

/// The scope (its index in the ask) a request would take past a cap, and where it stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub index: usize,
    pub shared: Shared,
}

/// A budget's period across all proxies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shared {
    pub spent: Money,
    pub spent_tokens: u64,
    pub reserved: Money,
    pub reserved_tokens: u64,
    pub requests: u64,
}

/// A request's reservation in the team database, on every scope of its chain. Settle it;
/// dropped unsettled, it is no longer renewed and expires with its lease.
#[must_use = "a team reservation must be settled"]
pub struct Hold {
    team: Arc<Team>,
    id: i64,
    /// Each scope's name and period, nearest first.
    scopes: Vec<(String, i64)>,
    /// The lineage of the key it came with.
    key: Option<String>,
}

impl Hold {
    fn new(team: Arc<Team>, id: i64, ask: Ask<'_>) -> Hold {
        let scopes = ask
            .scopes
            .iter()
            .map(|s| (s.name.clone(), s.period))
            .collect();
        Hold {
            team,
            id,
            scopes,
            key: ask.key.map(str::to_string),
        }
    }
    /// The lineage of the key it came with, if any.
    fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
    /// The team database it is held in.
    pub fn team(&self) -> &Arc<Team> {
        &self.team
    }
    pub fn id(&self) -> i64 {
        self.id
    }
    /// Each scope's name and period, nearest first.
    pub fn scopes(&self) -> &[(String, i64)] {
        &self.scopes
    }
}

/// Without the team (its pool would fill a failed test's output).
impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("id", &self.id)
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.team.live().remove(&self.id);
    }
}

/// What a settled request leaves in the team's record.
#[derive(Clone, Debug)]
pub struct Charge {
    pub cost: Money,
    pub tokens: u64,
    pub created_at: i64,
    pub model: String,
    pub upstream_request_id: Option<String>,
    /// The local day it settles on (YYYY-MM-DD), for the team's daily totals.
    pub day: String,
    /// Each scope it is charged on, name and period: the request's chain as it is when it
    /// settles (its budget may have moved since it was held), nearest first.
    pub scopes: Vec<(String, i64)>,
}

impl Charge {
    /// The budget charged, with its period: the first scope that is not a key's.
    fn budget(&self) -> (&str, i64) {
        (self.scopes.iter())
            .find(|(name, _)| !name.starts_with(KEY_SCOPE))
            .map_or(("", 0), |(name, period)| (name.as_str(), *period))
    }
}

#[derive(Debug)]
pub struct Team {
    pool: Pool,
    /// This proxy's name on its reservations, unique per run.
    proxy: String,
    lease: Duration,
    /// The reservations this proxy holds, renewed on every beat.
    live: Mutex<HashSet<i64>>,
    /// Each call's time, and whether the last one was answered (the metrics').
    calls: prometheus_client::metrics::histogram::Histogram,
    up: prometheus_client::metrics::gauge::Gauge,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Column `i` of a row, as `T`: an unexpected type is an error, not a panic.
fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    i: usize,
) -> Result<T, TeamError> {
    row.try_get(i).map_err(|e| TeamError::Schema(cause(&e)))
}

fn shared(row: &tokio_postgres::Row) -> Result<Shared, TeamError> {
    let n = |i: usize| col::<i64>(row, i);
    Ok(Shared {
        spent: Money::from_picos(n(0)?),
        spent_tokens: n(1)?.max(0) as u64,
        reserved: Money::from_picos(n(2)?),
        reserved_tokens: n(3)?.max(0) as u64,
        requests: n(4)?.max(0) as u64,
    })
}

impl Team {
    /// Connects, and creates the team tables if they are missing (under a lock, so proxies
    /// starting together do it once).
    pub async fn connect(url: &str, lease: Duration) -> Result<Arc<Team>, TeamError> {
        let mut cfg = deadpool_postgres::Config::new();
        cfg.url = Some(url.to_string());
        let mut pool_cfg = deadpool_postgres::PoolConfig::new(16);
        pool_cfg.timeouts.wait = Some(CALL_TIMEOUT);
        pool_cfg.timeouts.create = Some(CALL_TIMEOUT);
        pool_cfg.timeouts.recycle = Some(CALL_TIMEOUT);
        cfg.pool = Some(pool_cfg);
        let pool = cfg
            .create_pool(Some(Runtime::Tokio1), NoTls)
            .map_err(unreachable)?;
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes)
            .map_err(|e| TeamError::Unreachable(format!("no randomness for a proxy name: {e}")))?;
        let team = Arc::new(Team {
            pool,
            proxy: format!("{}-{}", std::process::id(), hex::encode(bytes)),
            lease,
            live: Mutex::new(HashSet::new()),
            calls: crate::metrics::histogram(&crate::metrics::DATABASE),
            up: Default::default(),
        });
        team.migrate().await?;
        team.up.set(1);
        Ok(team)
    }

    /// Brings the tables up to this build's version. A database already there is only read:
    /// DDL locks tables, and proxies start while others serve.
    async fn migrate(&self) -> Result<(), TeamError> {
        let schema = |e: tokio_postgres::Error| TeamError::Schema(cause(&e));
        let mut client = self.client().await?;
        let version = "SELECT COALESCE(max(version), 0)::BIGINT FROM team_schema";
        let exists: bool = client
            .query_one("SELECT to_regclass('team_schema') IS NOT NULL", &[])
            .await
            .map_err(schema)?
            .try_get(0)
            .map_err(schema)?;
        if exists {
            let done: i64 = client
                .query_one(version, &[])
                .await
                .map_err(schema)?
                .try_get(0)
                .map_err(schema)?;
            if done >= MIGRATIONS.len() as i64 {
                return Ok(());
            }
        }
        let tx = client.transaction().await.map_err(schema)?;
        // One proxy migrates; the others wait here and then find it done.
        tx.execute("SELECT pg_advisory_xact_lock(4727)", &[])
            .await
            .map_err(schema)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS team_schema (version INT NOT NULL)")
            .await
            .map_err(schema)?;
        let done: i64 = tx
            .query_one(version, &[])
            .await
            .map_err(schema)?
            .try_get(0)
            .map_err(schema)?;
        for sql in MIGRATIONS.iter().skip(done.max(0) as usize) {
            tx.batch_execute(sql).await.map_err(schema)?;
        }
        let now = MIGRATIONS.len() as i32;
        tx.execute("DELETE FROM team_schema WHERE version < $1", &[&now])
            .await
            .map_err(schema)?;
        tx.execute(
            "INSERT INTO team_schema (version) SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM team_schema)",
            &[&now],
        )
        .await
        .map_err(schema)?;
        tx.commit().await.map_err(schema)
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, TeamError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => unreachable(e),
            other => unreachable(other),
        })
    }

    /// Runs a call against the database, bounded by `CALL_TIMEOUT`.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, TeamError>>,
    ) -> Result<T, TeamError> {
        let started = std::time::Instant::now();
        let done = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(TeamError::Unreachable("no answer within 5 s".into())));
        self.calls.observe(started.elapsed().as_secs_f64());
        self.up
            .set(i64::from(!matches!(done, Err(TeamError::Unreachable(_)))));
        done
    }

    /// The calls' times and whether the database answers, to register with the metrics.
    pub fn metrics(
        &self,
    ) -> (
        prometheus_client::metrics::histogram::Histogram,
        prometheus_client::metrics::gauge::Gauge,
    ) {
        (self.calls.clone(), self.up.clone())
    }

    /// Claims alerts for a budget's period (thresholds; 0 for "blocked"); returns those this
    /// proxy claimed first, which it alone raises.
    pub async fn claim(
        &self,
        budget: &str,
        period: i64,
        alerts: &[u8],
    ) -> Result<Vec<u8>, TeamError> {
        let wanted: Vec<i32> = alerts.iter().map(|t| i32::from(*t)).collect();
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "INSERT INTO team_alerts (budget, period_start, threshold)
                     SELECT $1, $2, unnest($3::INT[]) ON CONFLICT DO NOTHING RETURNING threshold",
                    &[&budget, &period, &wanted],
                )
                .await
                .map_err(unreachable)?;
            let mut claimed = Vec::new();
            for r in &rows {
                claimed.extend(u8::try_from(col::<i32>(r, 0)?).ok());
            }
            Ok(claimed)
        })
        .await
    }

    /// The current figures of these budgets (by name), for dashboards.
    pub async fn snapshot(
        &self,
        budgets: &[String],
    ) -> Result<Vec<(String, i64, Shared)>, TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT spent, spent_tokens, reserved, reserved_tokens, requests, budget, period_start
                     FROM team_spend WHERE budget = ANY($1)",
                    &[&budgets],
                )
                .await
                .map_err(unreachable)?;
            rows.iter()
                .map(|r| Ok((col(r, 5)?, col(r, 6)?, shared(r)?)))
                .collect()
        })
        .await
    }

    /// Shares a budget's settings with the other proxies; the last write wins. None deletes
    /// it: its keys are revoked and its spend, alert claims and daily totals go, so a budget
    /// made again under its name starts afresh, as it does on one proxy (the charges stay in
    /// `team_usage`).
    pub async fn put_budget(&self, name: &str, spec: Option<&str>) -> Result<(), TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute(
                    "WITH put AS (
                       INSERT INTO team_budgets (name, spec, since) VALUES ($1, $2, $3)
                       ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec, updated_at = now(),
                         since = CASE WHEN team_budgets.spec IS NULL THEN EXCLUDED.since
                                      ELSE team_budgets.since END),
                     revoked AS (
                       UPDATE team_keys SET revoked_at = now()
                       WHERE $2::TEXT IS NULL AND budget = $1 AND revoked_at IS NULL),
                     spend AS (DELETE FROM team_spend WHERE $2::TEXT IS NULL AND budget = $1),
                     claims AS (DELETE FROM team_alerts WHERE $2::TEXT IS NULL AND budget = $1)
                     DELETE FROM team_daily WHERE $2::TEXT IS NULL AND budget = $1",
                    &[&name, &spec, &chrono::Utc::now().timestamp_millis()],
                )
                .await
                .map_err(unreachable)?;
            Ok(())
        })
        .await
    }

    /// Every shared budget's settings, by name (None: deleted).
    pub async fn budgets(&self) -> Result<Vec<(String, Option<String>)>, TeamError> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query("SELECT name, spec FROM team_budgets", &[])
                .await
                .map_err(unreachable)?;
            rows.iter().map(|r| Ok((col(r, 0)?, col(r, 1)?))).collect()
        })
        .await
    }

    /// Renews this proxy's leases and frees every proxy's expired ones.
    pub async fn beat(&self) -> Result<u64, TeamError> {
        let ids: Vec<i64> = self.live().iter().copied().collect();
        self.bounded(async {
            let client = self.client().await?;
            if !ids.is_empty() {
                client
                    .execute(
                        "UPDATE team_reservations SET lease_until = now() + $2::BIGINT * interval '1 millisecond' WHERE hold = ANY($1)",
                        &[&ids, &(self.lease.as_millis() as i64)],
                    )
                    .await
                    .map_err(unreachable)?;
            }
            let row = client
                .query_one("SELECT team_sweep()", &[])
                .await
                .map_err(unreachable)?;
            Ok(col::<i64>(&row, 0)?.max(0) as u64)
        })
        .await
    }

    /// Beats every third of a lease until `stop`, so a live proxy's reservations never expire
    /// and a dead one's are freed within a lease and a third.
    pub async fn keep_leases(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(self.lease / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {
                    if let Err(e) = self.beat().await {
                        tracing::warn!("cannot renew team reservations: {e}");
                    }
                }
            }
        }
    }
}
