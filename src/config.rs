//! Validated configuration of a running server. The CLI (and later the desktop app) builds
//! one; every error names the flag or variable and the rule it broke.

use crate::budget::period::Zone;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_PORT: u16 = 4727;
/// Open connections at most, by default: far above any laptop's agents, well below the
/// open-file limit once it is raised (docs/RELIABILITY.md).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
pub const BASE_PATH: &str = "/agent-budget";
/// How a virtual key begins: how the proxy tells one from a real Anthropic key.
pub const KEY_PREFIX: &str = "sk-ab-";
/// How long a team reservation outlives its proxy's last renewal (`--lease-secs`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// A secret that never prints: `Debug` shows only its last four characters.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The last four characters, the most of a key anything shows.
    pub fn last4(&self) -> String {
        let n = self.0.chars().count();
        self.0.chars().skip(n.saturating_sub(4)).collect()
    }
}

/// Why a text is not an Anthropic API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadKey {
    #[error(
        "the key is empty or has spaces or control characters; give the Anthropic API key itself (sk-ant-…)"
    )]
    Malformed,
    #[error(
        "that is an agent-budget virtual key (sk-ab-…), which only this proxy accepts; give the real Anthropic API key (sk-ant-…)"
    )]
    Virtual,
}

/// Reads the real Anthropic key as typed, pasted or stored: surrounding white space is
/// dropped; the rest must be printable ASCII (it goes into a header) and not one of ours.
pub fn parse_upstream_key(text: &str) -> Result<Secret, BadKey> {
    let key = text.trim();
    if key.is_empty() || key.len() > 1024 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BadKey::Malformed);
    }
    if key.starts_with(KEY_PREFIX) {
        return Err(BadKey::Virtual);
    }
    Ok(Secret(key.to_string()))
}

/// Where the real Anthropic key in use came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum KeySource {
    File,
    Environment,
    Keychain,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(…{})", self.last4())
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub host: IpAddr,
    /// 0 picks a free port (tests).
    pub port: u16,
    pub data_dir: PathBuf,
    /// Scheme, host and optional path prefix of the Anthropic API, without a trailing slash.
    pub upstream: String,
    /// The admin token given by flag or environment; without one (and without `open_admin`)
    /// the server makes one in `<data-dir>/admin-token`.
    pub admin_token: Option<String>,
    /// `--open-admin`: the REST API needs no token (loopback only).
    pub open_admin: bool,
    pub retention_days: u32,
    pub require_budget: bool,
    /// Forward requests even while usage records cannot be saved (docs/RELIABILITY.md).
    pub fail_open: bool,
    /// Host names accepted in the `Host` header besides loopback ones.
    pub allowed_hosts: Vec<String>,
    pub upstream_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Open connections at most; one more is answered 503 and closed.
    pub max_connections: usize,
    /// For a request's headers, and for the next request on an idle kept-alive connection.
    pub idle_timeout: Duration,
    pub zone: Zone,
    /// The real Anthropic key given by file or environment; without one, the keychain's.
    pub upstream_key: Option<(Secret, KeySource)>,
    /// Read and store the real key in the OS keychain.
    pub keychain: bool,
    /// Refuse requests that carry any key but one of ours.
    pub require_virtual_key: bool,
    /// PostgreSQL shared by the proxies that enforce team budgets together (docs/team.md).
    pub database: Option<Secret>,
    /// How long a team reservation outlives its proxy's last renewal.
    pub lease: Duration,
    /// The shares of a subscription window (percent) that raise an alert, once per window.
    pub subscription_alerts: Vec<u8>,
    /// Where subscription window alerts are also posted.
    pub subscription_webhook: Option<String>,
    /// `/agent-budget/metrics` without the admin token.
    pub open_metrics: bool,
    /// Where spans go (the `OTEL_*` variables), if anywhere.
    pub traces: Option<crate::traces::Config>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--subscription-alerts / AGENT_BUDGET_SUBSCRIPTION_ALERTS: '{0}' is not a list of percentages from 1 to 100 (e.g. 80,95; 'none' for no alerts)"
    )]
    SubscriptionAlerts(String),
    #[error(
        "--subscription-webhook / AGENT_BUDGET_SUBSCRIPTION_WEBHOOK: '{0}' is not an http(s) URL"
    )]
    SubscriptionWebhook(String),
    #[error(
        "--host / AGENT_BUDGET_HOST: '{0}' is not an IP address (use 127.0.0.1, ::1 or 0.0.0.0)"
    )]
    Host(String),
    #[error(
        "--upstream / AGENT_BUDGET_UPSTREAM: '{0}' is not an http(s) URL (e.g. https://api.anthropic.com)"
    )]
    Upstream(String),
    #[error(
        "--open-admin would open the REST API to the network on --host {0}, which is not a loopback address: drop --open-admin (the API then takes the admin token)"
    )]
    OpenAdminRemote(IpAddr),
    #[error(
        "--admin-token / AGENT_BUDGET_ADMIN_TOKEN must be at least 16 characters with no spaces"
    )]
    WeakToken,
    #[error("--retention-days must be between 1 and 36500")]
    Retention,
    #[error("--upstream-timeout must be between 1 and 86400 seconds")]
    Timeout,
    #[error("--shutdown-grace must be between 0 and 3600 seconds")]
    Grace,
    #[error(
        "--time-zone / AGENT_BUDGET_TIME_ZONE: '{0}' is not an IANA time zone name (e.g. Europe/Berlin)"
    )]
    Zone(String),
    #[error(
        "--data-dir / AGENT_BUDGET_DATA_DIR is not set and this platform has no app data directory; pass --data-dir"
    )]
    NoDataDir,
    #[error("--allowed-host: '{0}' is not a host name (letters, digits, '.', '-')")]
    AllowedHost(String),
    #[error("--upstream-key-file: {0}")]
    KeyFile(String),
    #[error("--upstream-key-file / AGENT_BUDGET_UPSTREAM_KEY: {0}")]
    BadKey(BadKey),
    #[error(
        "--database / AGENT_BUDGET_DATABASE_URL: {0} (e.g. postgres://agent:secret@db.internal:5432/budgets)"
    )]
    Database(String),
    #[error("--lease-secs must be between 1 and 3600")]
    Lease,
    #[error("--max-connections must be between 1 and 1000000")]
    MaxConnections,
    #[error("--idle-timeout must be between 1 and 3600 seconds")]
    IdleTimeout,
}

/// Raw settings as given (flags or environment); `validate` turns them into a `Config`.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub upstream: Option<String>,
    pub admin_token: Option<String>,
    pub open_admin: bool,
    pub retention_days: Option<u32>,
    pub require_budget: bool,
    pub fail_open: bool,
    pub allowed_hosts: Vec<String>,
    pub upstream_timeout_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub idle_timeout_secs: Option<u64>,
    pub time_zone: Option<String>,
    /// A file (mode 0600) holding the real Anthropic key, for servers without a keychain.
    pub upstream_key_file: Option<PathBuf>,
    /// The real Anthropic key itself (`AGENT_BUDGET_UPSTREAM_KEY`).
    pub upstream_key: Option<Secret>,
    pub require_virtual_key: bool,
    /// Leave the OS keychain alone (servers, and tests that must not see the user's).
    pub no_keychain: bool,
    /// `postgres://…`: enforce budgets together with the other proxies on this database.
    pub database: Option<String>,
    pub lease_secs: Option<u64>,
    /// `80,95` (the default), or `none`.
    pub subscription_alerts: Option<String>,
    pub subscription_webhook: Option<String>,
    pub open_metrics: bool,
    /// From the `OTEL_*` variables (`traces::config`).
    pub traces: Option<crate::traces::Config>,
}

/// Checks a `--database` URL without connecting: a PostgreSQL URL tokio-postgres can parse.
pub fn check_database(url: &str) -> Result<(), ConfigError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConfigError::Database(
            "only PostgreSQL is supported here: give a postgres:// URL (SQLite in the data directory is the default without --database)".into(),
        ));
    }
    url.parse::<tokio_postgres::Config>()
        .map(|_| ())
        .map_err(|e| ConfigError::Database(format!("not a valid PostgreSQL URL: {e}")))
}

/// Reads the key file, refusing one that others may read.
fn read_key_file(path: &std::path::Path) -> Result<String, ConfigError> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| ConfigError::KeyFile(format!("cannot read {shown}: {e}")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::KeyFile(format!(
                "{shown} is readable by others (mode {mode:o}); run chmod 600 {shown}"
            )));
        }
    }
    let _ = meta;
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::KeyFile(format!("cannot read {shown}: {e}")))
}

/// A database URL fit to show: its password replaced by dots.
pub fn redact_database(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("•••"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// The platform's app data directory for agent-budget (e.g. ~/.local/share/agent-budget).
pub fn default_data_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("agent-budget"))
}

impl Settings {
    pub fn validate(self) -> Result<Config, ConfigError> {
        let host = parse_host(self.host.unwrap_or_else(|| "127.0.0.1".into()))?;
        let upstream = self
            .upstream
            .unwrap_or_else(|| "https://api.anthropic.com".into());
        check_upstream(&upstream)?;
        let admin_token = check_admin(self.admin_token, self.open_admin, host)?;
        let retention_days = within(self.retention_days, 90, 1..=36500, ConfigError::Retention)?;
        let timeout = within(
            self.upstream_timeout_secs,
            600,
            1..=86400,
            ConfigError::Timeout,
        )?;
        let grace = within(self.shutdown_grace_secs, 30, 0..=3600, ConfigError::Grace)?;
        let max_connections = within(
            self.max_connections,
            DEFAULT_MAX_CONNECTIONS,
            1..=1_000_000,
            ConfigError::MaxConnections,
        )?;
        let idle = within(
            self.idle_timeout_secs,
            30,
            1..=3600,
            ConfigError::IdleTimeout,
        )?;
        let lease = within(
            self.lease_secs,
            DEFAULT_LEASE.as_secs(),
            1..=3600,
            ConfigError::Lease,
        )?;
        let zone = match self.time_zone.filter(|z| !z.is_empty()) {
            None => Zone::Local,
            Some(z) => Zone::parse(&z).ok_or(ConfigError::Zone(z))?,
        };
        if let Some(h) = self.allowed_hosts.iter().find(|h| !is_host_name(h)) {
            return Err(ConfigError::AllowedHost(h.clone()));
        }
        let upstream_key = upstream_key_of(self.upstream_key_file.as_deref(), self.upstream_key)?;
        let database = self.database.filter(|d| !d.is_empty());
        if let Some(url) = &database {
            check_database(url)?;
        }
        Ok(Config {
            host,
            port: self.port.unwrap_or(DEFAULT_PORT),
            data_dir: match self.data_dir {
                Some(d) => d,
                None => default_data_dir().ok_or(ConfigError::NoDataDir)?,
            },
            upstream: upstream.trim_end_matches('/').to_string(),
            admin_token,
            open_admin: self.open_admin,
            retention_days,
            require_budget: self.require_budget,
            fail_open: self.fail_open,
            allowed_hosts: self
                .allowed_hosts
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            upstream_timeout: Duration::from_secs(timeout),
            shutdown_grace: Duration::from_secs(grace),
            max_connections,
            idle_timeout: Duration::from_secs(idle),
            zone,
            upstream_key,
            keychain: !self.no_keychain,
            require_virtual_key: self.require_virtual_key,
            database: database.map(Secret),
            lease: Duration::from_secs(lease),
            subscription_alerts: subscription_alerts(self.subscription_alerts)?,
            subscription_webhook: subscription_webhook(self.subscription_webhook)?,
            open_metrics: self.open_metrics,
            traces: self.traces,
        })
    }
}

fn subscription_webhook(url: Option<String>) -> Result<Option<String>, ConfigError> {
    match url.filter(|w| !w.is_empty()) {
        Some(w) => crate::budget::check_webhook(w.clone())
            .map(Some)
            .map_err(|_| ConfigError::SubscriptionWebhook(w)),
        None => Ok(None),
    }
}

/// The window alert thresholds: `80,95` unless given; `none` for none.
fn subscription_alerts(text: Option<String>) -> Result<Vec<u8>, ConfigError> {
    let Some(text) = text.map(|t| t.trim().to_string()) else {
        return Ok(vec![80, 95]);
    };
    if text.is_empty() || text == "none" {
        return Ok(Vec::new());
    }
    let bad = || ConfigError::SubscriptionAlerts(text.chars().take(64).collect());
    let mut v = Vec::new();
    for part in text.split(',') {
        let t: u8 = part.trim().parse().map_err(|_| bad())?;
        if !(1..=100).contains(&t) || v.len() >= 10 {
            return Err(bad());
        }
        v.push(t);
    }
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// A setting's value, or its default, if it lies in `range`.
fn within<T: PartialOrd + Copy>(
    value: Option<T>,
    default: T,
    range: std::ops::RangeInclusive<T>,
    error: ConfigError,
) -> Result<T, ConfigError> {
    let v = value.unwrap_or(default);
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(error)
    }
}

/// The admin token, if given: 16 characters or more, no spaces. An open API only on loopback.
fn check_admin(
    token: Option<String>,
    open: bool,
    host: IpAddr,
) -> Result<Option<String>, ConfigError> {
    let token = token.filter(|t| !t.is_empty());
    if token
        .as_ref()
        .is_some_and(|t| t.len() < 16 || t.chars().any(char::is_whitespace))
    {
        return Err(ConfigError::WeakToken);
    }
    if !host.is_loopback() && open {
        return Err(ConfigError::OpenAdminRemote(host));
    }
    Ok(token)
}

fn parse_host(text: String) -> Result<IpAddr, ConfigError> {
    match text.as_str() {
        "localhost" => Ok(IpAddr::from([127, 0, 0, 1])),
        h => h
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| ConfigError::Host(text.clone())),
    }
}

fn check_upstream(upstream: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(upstream) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.query().is_none() =>
        {
            Ok(())
        }
        _ => Err(ConfigError::Upstream(upstream.to_string())),
    }
}

/// Whether `h` can be a `Host` name: letters, digits, dots and dashes.
fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// The real Anthropic key given at start-up: from its file, else from the environment.
fn upstream_key_of(
    file: Option<&std::path::Path>,
    env: Option<Secret>,
) -> Result<Option<(Secret, KeySource)>, ConfigError> {
    let given = match (file, env) {
        (Some(path), _) => Some((read_key_file(path)?, KeySource::File)),
        (None, key) => key.map(|k| (k.0, KeySource::Environment)),
    };
    given
        .map(|(text, source)| {
            parse_upstream_key(&text)
                .map(|k| (k, source))
                .map_err(ConfigError::BadKey)
        })
        .transpose()
}

#[cfg(test)]
mod tests;
