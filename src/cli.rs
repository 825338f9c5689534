//! The `serve` options, defined once — flag, environment variable, help text — and read the
//! same way by `agent-budget serve` (its arguments, then the environment) and by the desktop
//! app (the environment alone). Defaults and rules live in `Settings::validate`.

use crate::config::{Secret, Settings};
use clap::Parser;
use std::path::PathBuf;

/// No `Debug`: it holds the admin token and the upstream key. Switches set in the
/// environment take `1`/`0`, `true`/`false`, `yes`/`no` and `on`/`off`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "AGENT_BUDGET_HOST")]
    pub host: Option<String>,
    /// Port to listen on (also read from PORT).
    #[arg(long, env = "AGENT_BUDGET_PORT")]
    pub port: Option<u16>,
    /// Where the database and logs live (default: the platform's app data dir).
    #[arg(long, env = "AGENT_BUDGET_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The Anthropic API base URL.
    #[arg(long, env = "AGENT_BUDGET_UPSTREAM")]
    pub upstream: Option<String>,
    /// Bearer token required on /api/* (default: a random one in <data-dir>/admin-token).
    #[arg(long, env = "AGENT_BUDGET_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Serve the REST API without the admin token (loopback only): any local process may
    /// then change budgets and keys (docs/security.md).
    #[arg(long = "open-admin", env = "AGENT_BUDGET_OPEN_ADMIN", value_parser = clap::builder::BoolishValueParser::new())]
    pub open_admin: bool,
    /// Days of usage records to keep.
    #[arg(long, env = "AGENT_BUDGET_RETENTION_DAYS")]
    pub retention_days: Option<u32>,
    /// A file (mode 0600) with the real Anthropic API key: requests carrying a virtual key
    /// (sk-ab-…) are forwarded with it.
    #[arg(long = "upstream-key-file", env = "AGENT_BUDGET_UPSTREAM_KEY_FILE")]
    pub upstream_key_file: Option<PathBuf>,
    /// The real Anthropic API key itself (prefer the file: environments leak).
    #[arg(
        long = "upstream-key",
        env = "AGENT_BUDGET_UPSTREAM_KEY",
        hide_env_values = true,
        hide = true
    )]
    pub upstream_key: Option<String>,
    /// Refuse requests whose key is not a virtual key of this proxy.
    #[arg(long = "require-virtual-key", env = "AGENT_BUDGET_REQUIRE_VIRTUAL_KEY", value_parser = clap::builder::BoolishValueParser::new())]
    pub require_virtual_key: bool,
    /// Leave the OS keychain alone: the real key comes only from --upstream-key-file or
    /// AGENT_BUDGET_UPSTREAM_KEY.
    #[arg(long = "no-keychain", env = "AGENT_BUDGET_NO_KEYCHAIN", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_keychain: bool,
    /// PostgreSQL shared with other proxies: budgets are enforced across all of them
    /// (docs/team.md). Without it, each proxy enforces its own budgets alone.
    #[arg(long, env = "AGENT_BUDGET_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// Seconds a team reservation outlives its proxy (a proxy that dies frees its
    /// reservations within this and a third).
    #[arg(long = "lease-secs", env = "AGENT_BUDGET_LEASE_SECS")]
    pub lease_secs: Option<u64>,
    /// Percentages of a subscription's 5-hour or weekly window that raise an alert, once per
    /// window (default 80,95; `none` for none).
    #[arg(long = "subscription-alerts", env = "AGENT_BUDGET_SUBSCRIPTION_ALERTS")]
    pub subscription_alerts: Option<String>,
    /// An http(s) URL subscription window alerts are also posted to (signed as budget webhooks).
    #[arg(
        long = "subscription-webhook",
        env = "AGENT_BUDGET_SUBSCRIPTION_WEBHOOK"
    )]
    pub subscription_webhook: Option<String>,
    /// Serve /agent-budget/metrics without the admin token (for a Prometheus that cannot
    /// send it; the figures are budgets' spend, never keys or prompts).
    #[arg(long = "open-metrics", env = "AGENT_BUDGET_OPEN_METRICS", value_parser = clap::builder::BoolishValueParser::new())]
    pub open_metrics: bool,
    /// Refuse /v1/messages requests that name no budget.
    #[arg(long, env = "AGENT_BUDGET_REQUIRE_BUDGET", value_parser = clap::builder::BoolishValueParser::new())]
    pub require_budget: bool,
    /// Keep forwarding requests while usage records cannot be saved to the database
    /// (by default such requests are refused with 503 until saving works again).
    #[arg(long, env = "AGENT_BUDGET_FAIL_OPEN", value_parser = clap::builder::BoolishValueParser::new())]
    pub fail_open: bool,
    /// Extra host name accepted in the Host header (repeatable).
    #[arg(
        long = "allowed-host",
        env = "AGENT_BUDGET_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Seconds to wait for the upstream.
    #[arg(long = "upstream-timeout", env = "AGENT_BUDGET_UPSTREAM_TIMEOUT")]
    pub upstream_timeout: Option<u64>,
    /// Seconds open requests get to finish on SIGTERM before they are ended and charged.
    #[arg(long = "shutdown-grace", env = "AGENT_BUDGET_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<u64>,
    /// Open connections at most (one more is answered 503 and closed).
    #[arg(long = "max-connections", env = "AGENT_BUDGET_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds a client may take to send a request's headers, or stay idle between requests.
    #[arg(long = "idle-timeout", env = "AGENT_BUDGET_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,
    /// IANA time zone for budget periods (default: the machine's).
    #[arg(long, env = "AGENT_BUDGET_TIME_ZONE")]
    pub time_zone: Option<String>,
}

/// The environment alone, parsed as `serve` would parse it.
#[derive(Parser)]
#[command(name = "agent-budget")]
struct FromEnv {
    #[command(flatten)]
    args: ServeArgs,
}

impl ServeArgs {
    /// The options from the environment only (the desktop app has no command line of its
    /// own): every `AGENT_BUDGET_*` variable `serve` reads, with the same errors.
    pub fn from_env() -> Result<ServeArgs, String> {
        FromEnv::try_parse_from(["agent-budget"])
            .map(|e| e.args)
            .map_err(|e| first_line(&e.to_string()))
    }

    /// The settings these options give (`PORT` is read when neither `--port` nor
    /// `AGENT_BUDGET_PORT` is given).
    pub fn settings(self) -> Result<Settings, String> {
        let port = match (
            self.port,
            std::env::var("PORT").ok().filter(|p| !p.is_empty()),
        ) {
            (Some(p), _) => Some(p),
            (None, Some(p)) => Some(
                p.parse()
                    .map_err(|_| format!("PORT: '{p}' is not a port number (0-65535)"))?,
            ),
            (None, None) => None,
        };
        Ok(Settings {
            host: self.host,
            port,
            data_dir: self.data_dir,
            upstream: self.upstream,
            admin_token: self.admin_token,
            open_admin: self.open_admin,
            retention_days: self.retention_days,
            require_budget: self.require_budget,
            fail_open: self.fail_open,
            allowed_hosts: self.allowed_hosts,
            upstream_timeout_secs: self.upstream_timeout,
            shutdown_grace_secs: self.shutdown_grace,
            max_connections: self.max_connections,
            idle_timeout_secs: self.idle_timeout,
            time_zone: self.time_zone,
            upstream_key_file: self.upstream_key_file,
            upstream_key: self.upstream_key.map(Secret::new),
            require_virtual_key: self.require_virtual_key,
            no_keychain: self.no_keychain,
            database: self.database,
            lease_secs: self.lease_secs,
            subscription_alerts: self.subscription_alerts,
            subscription_webhook: self.subscription_webhook,
            open_metrics: self.open_metrics,
            traces: crate::traces::config(|k| std::env::var(k).ok()),
        })
    }
}

/// The first line of a clap error, without its `error: ` prefix.
pub fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("bad arguments")
        .trim_start_matches("error: ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Args;

    /// Every variable the README's configuration table names is one the options read, so the
    /// CLI and the desktop app cannot drift apart again.
    #[test]
    fn every_documented_variable_is_read() {
        let cmd = ServeArgs::augment_args(clap::Command::new("t"));
        let read: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        let readme = include_str!("../README.md");
        let section = readme
            .split("## Configuration")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .unwrap_or_default();
        let documented: Vec<&str> = section
            .split('`')
            .filter(|w| w.starts_with("AGENT_BUDGET_") && !w.contains(' '))
            .collect();
        assert!(documented.len() >= 20, "{documented:?}");
        for v in &documented {
            assert!(
                read.iter().any(|r| r == v),
                "{v} is documented but not read"
            );
        }
        for v in &read {
            assert!(
                documented.contains(&v.as_str()),
                "{v} is read but not documented"
            );
        }
    }
}
