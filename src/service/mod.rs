//! The service layer: one set of operations over the ledger, the store and the price table,
//! called by the REST API and the proxy (and later the desktop commands).

pub mod activity;
pub mod alerts;
pub mod badge;
pub mod budgets;
mod key_caps;
pub mod keys;
pub mod pricing;
mod scrape;
pub mod sign_in;
pub mod spans;
pub mod standing;
pub mod stats;
pub mod subscriptions;
pub mod team;
mod tree;
pub mod upstream_key;
pub mod webhook;

use crate::budget::period;
use crate::budget::{Budget, DEFAULT_BUDGET};
use crate::config::Config;
use crate::events::Events;
use crate::ledger::{Ledger, Raised};
use crate::pricing::{PriceBook, PricingError};
use crate::store::{self, Store, StoreError};
use crate::upstream::Upstream;
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot create the data directory {path}: {source}; choose a writable one with --data-dir"
    )]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pricing(#[from] PricingError),
    #[error("--database: {0}; check the URL, that the server runs and that it lets this user in")]
    Team(#[from] crate::team::TeamError),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error(
        "cannot create the secret file {path}: {source}; check that the data directory is writable"
    )]
    Secret {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

pub struct Service {
    pub config: Config,
    /// The admin token, sign-in links and dashboard sessions.
    pub admin: Arc<crate::admin::Admin>,
    pub ledger: Ledger,
    prices: RwLock<Arc<PriceBook>>,
    pub store: Store,
    /// For webhooks; the proxy's own traffic goes through `upstream`.
    pub client: reqwest::Client,
    pub upstream: Upstream,
    /// Owns every task that settles accounting, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled when the shutdown grace period is over: open streams end and settle.
    pub abort: CancellationToken,
    pub events: Events,
    /// Signs webhook bodies; kept in `<data-dir>/webhook-secret`.
    pub webhook_secret: String,
    /// Signs sign-ins' tokens: derived from the webhook secret, which a team shares.
    token_key: [u8; 32],
    /// Claude Code sign-ins waiting for approval.
    sign_ins: sign_in::SignIns,
    /// Poked when alerts are raised, to wake the webhook delivery loop.
    pub alerts_raised: Notify,
    /// Once-keys of the alerts the ledger does not track that were raised already (an
    /// unpriced model, ever; a malformed usage, per budget and period).
    pub raised_once: Mutex<HashSet<String>>,
    /// `http://host:port/agent-budget`, known once the listener is bound.
    pub base_url: OnceLock<String>,
    /// Virtual keys not revoked, by hash.
    pub keys: keys::Keys,
    /// The real Anthropic key virtual-key requests are forwarded with, and where it is from.
    real_key: RwLock<Option<upstream_key::RealKey>>,
    /// Keychain writes one at a time, so memory ends as the keychain does.
    keychain_lock: tokio::sync::Mutex<()>,
    /// The database shared with the other proxies enforcing team budgets, if any.
    pub team: Option<Arc<crate::team::Team>>,
    /// The team's figures of its budgets, for dashboards.
    team_totals: team::TeamTotals,
    /// Budget changes made here and those followed from the team, one at a time.
    budget_changes: tokio::sync::Mutex<()>,
    /// What the upstream last said of each credential's windows or rate limits.
    accounts: subscriptions::Accounts,
    /// The Prometheus metrics (docs/metrics.md).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where spans go, when the `OTEL_*` variables say.
    traces: Option<crate::traces::Exporter>,
}

/// The metrics, with those the writer and the team database keep.
fn metrics_of(
    store: &Store,
    team: Option<&Arc<crate::team::Team>>,
) -> Arc<crate::metrics::Metrics> {
    let metrics = Arc::new(crate::metrics::Metrics::new());
    metrics.register(
        "writer_commit_seconds",
        "Time each commit of usage records takes",
        store.writer.commit_seconds(),
    );
    if let Some(t) = team {
        let (calls, up) = t.metrics();
        let (seconds, answers) = (
            "Time each call to the team database takes",
            "Whether the team database answered its last call",
        );
        metrics.register("team_database_seconds", seconds, calls);
        metrics.register("team_database_up", answers, up);
    }
    metrics
}

impl Service {
    /// Opens the store, creates the `default` budget on first start, rebuilds the ledger.
    pub async fn start(config: Config) -> Result<(Arc<Service>, store::WriterHandle), StartError> {
        store::create_private_dir(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        // Opening migrates the database: blocking work, off the async threads.
        let dir = config.data_dir.clone();
        let (store, handle) = tokio::task::spawn_blocking(move || Store::open(&dir))
            .await
            .map_err(|_| StartError::from(store::StoreError::Closed))??;
        let overrides = store.read(store::pricing::overrides).await?;
        let book = PriceBook::seeded(overrides)?;
        let (ledger, raised_once) = load_ledger(&store, config.zone).await?;
        let webhook_secret =
            webhook::load_or_create_secret(&config.data_dir).map_err(|source| {
                StartError::Secret {
                    path: config.data_dir.join(webhook::SECRET_FILE),
                    source,
                }
            })?;
        let admin_token = admin_token(&config)?;
        let client = webhook_client(&config)?;
        let upstream = Upstream::new(&config.upstream).map_err(StartError::Client)?;
        let keys = keys::Keys::load(store.read(store::keys::active).await?);
        let accounts = subscriptions::Accounts::load(store.read(store::subscriptions::all).await?);
        let real_key = upstream_key::initial(&config).await;
        let real_key = RwLock::new(real_key.and_then(|(k, s)| upstream_key::RealKey::new(&k, s)));
        let team = match &config.database {
            Some(url) => Some(crate::team::Team::connect(url.expose(), config.lease).await?),
            None => None,
        };
        // A team signs every webhook with one secret, whichever proxy delivers it.
        let webhook_secret = match &team {
            Some(t) => t.secret(&webhook_secret).await?,
            None => webhook_secret,
        };
        let metrics = metrics_of(&store, team.as_ref());
        let traces =
            (config.traces.clone()).map(|c| crate::traces::Exporter::start(c, client.clone()));
        let service = Service {
            config,
            admin: Arc::new(crate::admin::Admin::new(admin_token)),
            ledger,
            prices: RwLock::new(Arc::new(book)),
            store,
            client,
            upstream,
            tracker: TaskTracker::new(),
            abort: CancellationToken::new(),
            events: Events::default(),
            token_key: sha2::Sha256::digest(format!(
                "agent-budget sign-in tokens {webhook_secret}"
            ))
            .into(),
            webhook_secret,
            sign_ins: Default::default(),
            alerts_raised: Notify::new(),
            raised_once: Mutex::new(raised_once),
            base_url: OnceLock::new(),
            keys,
            real_key,
            keychain_lock: tokio::sync::Mutex::new(()),
            team,
            team_totals: Default::default(),
            budget_changes: tokio::sync::Mutex::new(()),
            accounts,
            metrics,
            traces,
        };
        Ok((Arc::new(service), handle))
    }

    /// The price table in force now; a request keeps the snapshot it started with.
    /// Why usage records cannot be saved now, if they cannot.
    pub fn failure(&self) -> Option<String> {
        self.store.health.failure()
    }

    pub fn prices(&self) -> Arc<PriceBook> {
        self.prices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The dashboard's address, for links in chat messages.
    pub fn dashboard_url(&self) -> String {
        match self.base_url.get() {
            Some(u) => format!("{u}/"),
            None => format!(
                "http://localhost:{}/agent-budget/",
                crate::config::DEFAULT_PORT
            ),
        }
    }

    fn set_prices(&self, book: PriceBook) {
        *self.prices.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(book);
    }
}

/// The ledger as the store left it: every budget (the built-in `default` made on first run)
/// with its history; and the once-keys of the alerts already raised.
async fn load_ledger(
    store: &Store,
    zone: period::Zone,
) -> Result<(Ledger, HashSet<String>), StartError> {
    let now = period::now();
    let mut budgets = store.read(store::budgets::load_all).await?;
    if !budgets.iter().any(|b| b.name == DEFAULT_BUDGET) {
        let default = Budget::built_in(now);
        budgets.push(
            store
                .writer
                .run(move |tx| store::budgets::insert(tx, &default))
                .await?,
        );
    }
    let (mut alerted, raised_once) = alerted(store.read(store::alerts::once_keys).await?);
    let mut histories = tree::histories(store, &budgets, zone).await?;
    let ledger = Ledger::new(zone);
    for b in budgets {
        let mut history = histories.remove(&b.id).unwrap_or_default();
        history.alerted = alerted.remove(&b.id).unwrap_or_default();
        ledger.insert(b, history, now);
    }
    key_caps::load(store, &ledger, zone).await?;
    Ok((ledger, raised_once))
}

/// The admin token: given, none with `--open-admin`, else the data directory's.
fn admin_token(config: &Config) -> Result<Option<String>, StartError> {
    match (&config.admin_token, config.open_admin) {
        (Some(t), _) => Ok(Some(t.clone())),
        (None, true) => Ok(None),
        (None, false) => crate::admin::load_or_create_token(&config.data_dir)
            .map(Some)
            .map_err(|source| StartError::Secret {
                path: config.data_dir.join(crate::admin::TOKEN_FILE),
                source,
            }),
    }
}

/// The client webhooks are delivered with.
fn webhook_client(config: &Config) -> Result<reqwest::Client, StartError> {
    reqwest::Client::builder()
        // Webhooks are not redirected, like the proxy's own requests (see `Upstream`).
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(config.upstream_timeout)
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .build()
        .map_err(|e| StartError::Client(e.to_string()))
}

/// Splits stored once-keys into each budget's raised alerts (period start, threshold or None
/// for "blocked") and the once-keys of the other alerts raised once (`Service::raised_once`).
fn alerted(keys: Vec<String>) -> (HashMap<i64, Raised>, HashSet<String>) {
    let mut by_budget: HashMap<i64, Raised> = HashMap::new();
    let mut once = HashSet::new();
    for k in keys {
        let parts: Vec<&str> = k.splitn(4, ':').collect();
        match parts.as_slice() {
            ["threshold", b, start, t] => {
                if let (Ok(b), Ok(start), Ok(t)) = (b.parse(), start.parse(), t.parse()) {
                    by_budget.entry(b).or_default().push((start, Some(t)));
                }
            }
            ["blocked", b, start] => {
                if let (Ok(b), Ok(start)) = (b.parse(), start.parse()) {
                    by_budget.entry(b).or_default().push((start, None));
                }
            }
            ["unpriced" | "malformed", ..] => {
                once.insert(k);
            }
            _ => {}
        }
    }
    (by_budget, once)
}
