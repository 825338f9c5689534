//! The real Anthropic key that requests carrying a virtual key are forwarded with: given by
//! file or environment (fixed for the run), or kept in the OS keychain (set and removed from
//! Settings, the desktop app or `agent-budget key`). Shown only by its last four characters.

use super::Service;
use crate::config::{KeySource, Secret, parse_upstream_key};
use crate::dto::{NewUpstreamKey, UpstreamKeyView};
use crate::error::HttpError;
use crate::keychain::{self, KeychainError};
use axum::http::{HeaderValue, StatusCode};
use std::time::Duration;

/// Long enough for a person to answer the keychain's unlock prompt.
const KEYCHAIN_WAIT: Duration = Duration::from_secs(120);

impl From<KeychainError> for HttpError {
    fn from(e: KeychainError) -> HttpError {
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", e.to_string())
    }
}

/// Runs a keychain call, bounded so a prompt nobody answers cannot hold a request forever.
async fn bounded<T>(
    call: impl Future<Output = Result<T, KeychainError>>,
) -> Result<T, KeychainError> {
    tokio::time::timeout(KEYCHAIN_WAIT, call)
        .await
        .unwrap_or(Err(KeychainError::Unavailable(
            "it did not answer within 2 minutes; is it locked with nobody to unlock it?".into(),
        )))
}

/// The real key in use, as requests carry it: built once, so forwarding copies no secret.
#[derive(Debug)]
pub struct RealKey {
    header: HeaderValue,
    last4: String,
    source: KeySource,
}

impl RealKey {
    /// None for a key no header can carry (`parse_upstream_key` admits none such).
    pub fn new(key: &Secret, source: KeySource) -> Option<RealKey> {
        let mut header = HeaderValue::from_str(key.expose()).ok()?;
        header.set_sensitive(true);
        Some(RealKey {
            header,
            last4: key.last4(),
            source,
        })
    }
}

impl Service {
    pub fn upstream_key(&self) -> UpstreamKeyView {
        let key = self.real_key.read().unwrap_or_else(|p| p.into_inner());
        UpstreamKeyView {
            source: key.as_ref().map(|k| k.source),
            last4: key.as_ref().map(|k| k.last4.clone()),
            keychain: self.config.keychain,
        }
    }

    /// The `x-api-key` value of the real key, if one is set.
    pub(super) fn real_key(&self) -> Option<HeaderValue> {
        let key = self.real_key.read().unwrap_or_else(|p| p.into_inner());
        key.as_ref().map(|k| k.header.clone())
    }

    fn set_real_key(&self, key: Option<&Secret>) {
        *self.real_key.write().unwrap_or_else(|p| p.into_inner()) =
            key.and_then(|k| RealKey::new(k, KeySource::Keychain));
    }

    /// The keychain can change the key only when no file or variable fixes it for the run.
    fn keychain_in_charge(&self) -> Result<(), HttpError> {
        if let Some((_, source @ (KeySource::File | KeySource::Environment))) =
            self.config.upstream_key
        {
            let given = match source {
                KeySource::File => "--upstream-key-file (AGENT_BUDGET_UPSTREAM_KEY_FILE)",
                _ => "AGENT_BUDGET_UPSTREAM_KEY",
            };
            return Err(HttpError::new(
                StatusCode::CONFLICT,
                "conflict_error",
                format!(
                    "the upstream key is given by {given} for this run; change it there and restart, or start without it to keep the key in the OS keychain"
                ),
            ));
        }
        if !self.config.keychain {
            return Err(KeychainError::Off.into());
        }
        Ok(())
    }

    /// Stores the real key in the OS keychain and uses it from the next request on.
    pub async fn set_upstream_key(
        &self,
        input: NewUpstreamKey,
    ) -> Result<UpstreamKeyView, HttpError> {
        let key = parse_upstream_key(&input.key)
            .map_err(|e| HttpError::invalid(format!("field 'key': {e}")))?;
        self.keychain_in_charge()?;
        let _one_at_a_time = self.keychain_lock.lock().await;
        bounded(keychain::write(key.clone())).await?;
        self.set_real_key(Some(&key));
        tracing::info!("the upstream key was stored in the OS keychain");
        Ok(self.upstream_key())
    }

    /// Removes the real key from the keychain; virtual keys are refused until a new one is set.
    pub async fn delete_upstream_key(&self) -> Result<(), HttpError> {
        self.keychain_in_charge()?;
        let _one_at_a_time = self.keychain_lock.lock().await;
        if !bounded(keychain::delete()).await? {
            return Err(HttpError::not_found(
                "the OS keychain holds no upstream key for agent-budget",
            ));
        }
        self.set_real_key(None);
        tracing::info!("the upstream key was removed from the OS keychain");
        Ok(())
    }
}

/// The key a run starts with: the one given, else the keychain's. A keychain that cannot be
/// read leaves virtual keys refused (with a message saying why) but the proxy running.
pub async fn initial(config: &crate::config::Config) -> Option<(Secret, KeySource)> {
    if let Some(given) = &config.upstream_key {
        return Some(given.clone());
    }
    if !config.keychain {
        return None;
    }
    match tokio::time::timeout(Duration::from_secs(10), keychain::read()).await {
        Ok(Ok(None)) => None,
        Ok(Ok(Some(k))) => match parse_upstream_key(k.expose()) {
            Ok(k) => Some((k, KeySource::Keychain)),
            Err(e) => {
                tracing::warn!(
                    "the upstream key in the OS keychain is unusable: {e}; set it again in Settings"
                );
                None
            }
        },
        Ok(Err(e)) => {
            tracing::info!("no upstream key from the keychain: {e}");
            None
        }
        Err(_) => {
            tracing::warn!(
                "the OS keychain did not answer within 10 s; virtual keys are refused until a key is set in Settings"
            );
            None
        }
    }
}
