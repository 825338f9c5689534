//! Validated configuration of a running server. The CLI (and later the desktop app) builds
//! one; every error names the flag or variable and the rule it broke.

use crate::budget::period::Zone;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_PORT: u16 = 4727;
pub const BASE_PATH: &str = "/agent-budget";

#[derive(Clone, Debug)]
pub struct Config {
    pub host: IpAddr,
    /// 0 picks a free port (tests).
    pub port: u16,
    pub data_dir: PathBuf,
    /// Scheme, host and optional path prefix of the Anthropic API, without a trailing slash.
    pub upstream: String,
    pub admin_token: Option<String>,
    pub retention_days: u32,
    pub require_budget: bool,
    /// Forward requests even while usage records cannot be saved (docs/RELIABILITY.md).
    pub fail_open: bool,
    /// Host names accepted in the `Host` header besides loopback ones.
    pub allowed_hosts: Vec<String>,
    pub upstream_timeout: Duration,
    pub shutdown_grace: Duration,
    pub zone: Zone,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--host / AGENT_BUDGET_HOST: '{0}' is not an IP address (use 127.0.0.1, ::1 or 0.0.0.0)"
    )]
    Host(String),
    #[error(
        "--upstream / AGENT_BUDGET_UPSTREAM: '{0}' is not an http(s) URL (e.g. https://api.anthropic.com)"
    )]
    Upstream(String),
    #[error(
        "--host {0} is not a loopback address, so the REST API would be open to the network: set --admin-token (or AGENT_BUDGET_ADMIN_TOKEN)"
    )]
    TokenRequired(IpAddr),
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
}

/// Raw settings as given (flags or environment); `validate` turns them into a `Config`.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub upstream: Option<String>,
    pub admin_token: Option<String>,
    pub retention_days: Option<u32>,
    pub require_budget: bool,
    pub fail_open: bool,
    pub allowed_hosts: Vec<String>,
    pub upstream_timeout_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub time_zone: Option<String>,
}

/// The platform's app data directory for agent-budget (e.g. ~/.local/share/agent-budget).
pub fn default_data_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("agent-budget"))
}

impl Settings {
    pub fn validate(self) -> Result<Config, ConfigError> {
        let host_text = self.host.unwrap_or_else(|| "127.0.0.1".into());
        let host: IpAddr = match host_text.as_str() {
            "localhost" => IpAddr::from([127, 0, 0, 1]),
            h => h
                .trim_matches(|c| c == '[' || c == ']')
                .parse()
                .map_err(|_| ConfigError::Host(host_text.clone()))?,
        };
        let upstream = self
            .upstream
            .unwrap_or_else(|| "https://api.anthropic.com".into());
        match reqwest::Url::parse(&upstream) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none() => {}
            _ => return Err(ConfigError::Upstream(upstream)),
        }
        let admin_token = self.admin_token.filter(|t| !t.is_empty());
        if let Some(t) = &admin_token {
            if t.len() < 16 || t.chars().any(char::is_whitespace) {
                return Err(ConfigError::WeakToken);
            }
        }
        if !host.is_loopback() && admin_token.is_none() {
            return Err(ConfigError::TokenRequired(host));
        }
        let retention_days = self.retention_days.unwrap_or(90);
        if !(1..=36500).contains(&retention_days) {
            return Err(ConfigError::Retention);
        }
        let timeout = self.upstream_timeout_secs.unwrap_or(600);
        if !(1..=86400).contains(&timeout) {
            return Err(ConfigError::Timeout);
        }
        let grace = self.shutdown_grace_secs.unwrap_or(30);
        if grace > 3600 {
            return Err(ConfigError::Grace);
        }
        let zone = match self.time_zone.filter(|z| !z.is_empty()) {
            None => Zone::Local,
            Some(z) => Zone::parse(&z).ok_or(ConfigError::Zone(z))?,
        };
        for h in &self.allowed_hosts {
            if h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                return Err(ConfigError::AllowedHost(h.clone()));
            }
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
            zone,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Settings {
        Settings {
            data_dir: Some("/tmp/x".into()),
            ..Settings::default()
        }
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = s().validate().unwrap();
        assert_eq!(
            (c.host.to_string(), c.port, c.upstream.as_str()),
            ("127.0.0.1".into(), 4727, "https://api.anthropic.com")
        );
        assert_eq!(
            (
                c.retention_days,
                c.upstream_timeout.as_secs(),
                c.shutdown_grace.as_secs()
            ),
            (90, 600, 30)
        );
    }

    #[test]
    fn each_bad_setting_is_named() {
        let bad = [
            (
                Settings {
                    host: Some("nope".into()),
                    ..s()
                },
                "--host",
            ),
            (
                Settings {
                    host: Some("0.0.0.0".into()),
                    ..s()
                },
                "--admin-token",
            ),
            (
                Settings {
                    upstream: Some("ftp://x".into()),
                    ..s()
                },
                "--upstream",
            ),
            (
                Settings {
                    admin_token: Some("short".into()),
                    ..s()
                },
                "--admin-token",
            ),
            (
                Settings {
                    retention_days: Some(0),
                    ..s()
                },
                "--retention-days",
            ),
            (
                Settings {
                    shutdown_grace_secs: Some(3601),
                    ..s()
                },
                "--shutdown-grace",
            ),
            (
                Settings {
                    upstream_timeout_secs: Some(0),
                    ..s()
                },
                "--upstream-timeout",
            ),
            (
                Settings {
                    time_zone: Some("Mars/Olympus".into()),
                    ..s()
                },
                "--time-zone",
            ),
            (
                Settings {
                    allowed_hosts: vec!["a b".into()],
                    ..s()
                },
                "--allowed-host",
            ),
        ];
        for (settings, flag) in bad {
            let msg = settings.validate().unwrap_err().to_string();
            assert!(msg.contains(flag), "{msg}");
        }
        let open = Settings {
            host: Some("0.0.0.0".into()),
            admin_token: Some("0123456789abcdef".into()),
            ..s()
        };
        assert!(open.validate().is_ok());
    }
}
