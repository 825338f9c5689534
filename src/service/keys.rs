//! Virtual keys: a budget's own API keys (`sk-ab-…`). A request carrying one is charged to
//! its budget and forwarded with the real Anthropic key instead; only a hash of each key is
//! stored, and the proxy looks keys up in memory.

use super::Service;
use crate::budget::period;
use crate::dto::{Items, KeyCreated, KeyView, NewKey};
use crate::error::HttpError;
use crate::store;
use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::RwLock;

pub const KEY_PREFIX: &str = "sk-ab-";

/// The keys not revoked, by hash: (key id, budget id).
#[derive(Debug, Default)]
pub struct Keys(RwLock<HashMap<String, (i64, i64)>>);

impl Keys {
    pub fn load(active: Vec<(String, i64, i64)>) -> Keys {
        Keys(RwLock::new(
            active.into_iter().map(|(h, id, b)| (h, (id, b))).collect(),
        ))
    }
    fn budget_of(&self, key: &str) -> Option<i64> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(&hash(key)).map(|(_, b)| *b)
    }
    fn add(&self, hash: String, id: i64, budget_id: i64) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash, (id, budget_id));
    }
    fn remove(&self, hash: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash);
    }
    /// Forgets a deleted budget's keys.
    pub fn forget_budget(&self, budget_id: i64) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (_, b)| *b != budget_id);
    }
}

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn unauthorized(msg: impl Into<String>) -> HttpError {
    HttpError::new(StatusCode::UNAUTHORIZED, "authentication_error", msg)
        .with_header("x-should-retry", "false")
}

/// The request's API key as sent: `x-api-key`, else a bearer token.
fn presented(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::trim)
}

impl Service {
    /// Swaps a virtual key for the real one and says whose budget it is; refuses unknown or
    /// revoked virtual keys, and (with `--require-virtual-key`) any other key.
    pub fn resolve_key(&self, headers: &mut HeaderMap) -> Result<Option<i64>, HttpError> {
        let Some(key) = presented(headers).filter(|k| k.starts_with(KEY_PREFIX)) else {
            if self.config.require_virtual_key {
                return Err(unauthorized(
                    "agent-budget: this proxy accepts only its virtual keys (sk-ab-…): create one on the budget's page and send it as the API key",
                ));
            }
            return Ok(None);
        };
        let budget = self.keys.budget_of(key).ok_or_else(|| {
            unauthorized("agent-budget: this virtual key is unknown or revoked; create a new one on the budget's page")
        })?;
        let real = self.real_key().ok_or_else(|| {
            unauthorized("agent-budget: virtual keys need the real Anthropic key, and none is set: store it in the dashboard's Settings (or with `agent-budget key set`), or start the proxy with --upstream-key-file")
        })?;
        headers.remove("authorization");
        headers.insert("x-api-key", real);
        Ok(Some(budget))
    }

    pub async fn create_key(&self, budget: &str, input: NewKey) -> Result<KeyCreated, HttpError> {
        let name = input.name.trim().to_string();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(HttpError::invalid(
                "field 'name' must be 1 to 64 characters without control characters (e.g. \"laptop\" or \"ci\")",
            ));
        }
        let budget_id = self.slot(budget)?.status(period::now()).budget.id;
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| {
            HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                format!("agent-budget: no randomness for a key: {e}"),
            )
        })?;
        let key = format!("{KEY_PREFIX}{}", hex::encode(bytes));
        let (h, at) = (hash(&key), period::now());
        let (h2, n) = (h.clone(), name.clone());
        let id = self
            .store
            .writer
            .run(move |tx| store::keys::insert(tx, budget_id, &n, &h2, at))
            .await?;
        self.keys.add(h, id, budget_id);
        Ok(KeyCreated {
            id,
            name,
            key,
            created_at: self.config.zone.render(at),
        })
    }

    pub async fn list_keys(&self, budget: &str) -> Result<Items<KeyView>, HttpError> {
        let budget_id = self.slot(budget)?.status(period::now()).budget.id;
        let zone = self.config.zone;
        let items = self
            .store
            .read(move |c| store::keys::list(c, budget_id, zone))
            .await?;
        Ok(Items { items })
    }

    pub async fn revoke_key(&self, budget: &str, key_id: &str) -> Result<(), HttpError> {
        let budget_id = self.slot(budget)?.status(period::now()).budget.id;
        let id: i64 = key_id.parse().map_err(|_| {
            HttpError::invalid(format!(
                "'{key_id}' is not a key id: use the id GET …/keys lists"
            ))
        })?;
        let (at, zone) = (period::now(), self.config.zone);
        let before = self
            .store
            .writer
            .run(move |tx| store::keys::revoke(tx, budget_id, id, at, zone))
            .await?;
        match before {
            None => Err(HttpError::not_found(format!(
                "budget '{budget}' has no key {id}"
            ))),
            Some((k, _)) if k.revoked_at.is_some() => Err(HttpError::new(
                StatusCode::CONFLICT,
                "conflict_error",
                format!(
                    "key {id} of budget '{budget}' was already revoked at {}",
                    k.revoked_at.unwrap_or_default()
                ),
            )),
            Some((_, hash)) => {
                self.keys.remove(&hash);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_key_is_found_by_its_hash_only() {
        let keys = Keys::load(vec![(hash("sk-ab-1"), 7, 3)]);
        assert_eq!(keys.budget_of("sk-ab-1"), Some(3));
        assert_eq!(keys.budget_of("sk-ab-2"), None);
        keys.forget_budget(3);
        assert_eq!(keys.budget_of("sk-ab-1"), None);
    }

    #[test]
    fn the_key_comes_from_x_api_key_or_a_bearer_token() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer sk-ab-x"));
        assert_eq!(presented(&h), Some("sk-ab-x"));
        h.insert("x-api-key", HeaderValue::from_static("sk-ant-y"));
        assert_eq!(presented(&h), Some("sk-ant-y"));
    }
}
