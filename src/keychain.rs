//! The real Anthropic key in the OS keychain (Secret Service on Linux, Keychain on macOS,
//! Credential Manager on Windows), under service `agent-budget`, account `anthropic-api-key`.
//! Every call blocks on the platform, so each runs on a blocking thread of its own: the
//! Secret Service client deadlocks when called on a thread that drives the async runtime.

use crate::config::Secret;

const SERVICE: &str = "agent-budget";
const ACCOUNT: &str = "anthropic-api-key";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeychainError {
    #[error(
        "the OS keychain is not available ({0}); on a machine without one, give the key with --upstream-key-file or AGENT_BUDGET_UPSTREAM_KEY"
    )]
    Unavailable(String),
    #[error("the OS keychain is turned off (--no-keychain / AGENT_BUDGET_NO_KEYCHAIN)")]
    Off,
}

fn entry() -> Result<keyring::Entry, KeychainError> {
    keyring::Entry::new(SERVICE, ACCOUNT).map_err(unavailable)
}

fn unavailable(e: keyring::Error) -> KeychainError {
    KeychainError::Unavailable(e.to_string())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KeychainError> + Send + 'static,
) -> Result<T, KeychainError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KeychainError::Unavailable(format!("the keychain call failed: {e}")))?
}

/// The stored key, or None when the keychain holds none.
pub async fn read() -> Result<Option<Secret>, KeychainError> {
    blocking(|| match entry()?.get_password() {
        Ok(k) => Ok(Some(Secret::new(k))),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(unavailable(e)),
    })
    .await
}

pub async fn write(key: Secret) -> Result<(), KeychainError> {
    blocking(move || entry()?.set_password(key.expose()).map_err(unavailable)).await
}

/// Deletes the stored key; false when there was none.
pub async fn delete() -> Result<bool, KeychainError> {
    blocking(|| match entry()?.delete_credential() {
        Ok(()) => Ok(true),
        Err(keyring::Error::NoEntry) => Ok(false),
        Err(e) => Err(unavailable(e)),
    })
    .await
}
