//! Virtual keys: a budget's own API keys (`sk-ab-…`). A request carrying one is charged to
//! its budget and forwarded with the real Anthropic key instead; only a hash of each key is
//! stored, and the proxy looks keys up in memory.

use super::Service;
use super::sign_in::{TOKEN_PREFIX, token_expiry};
use crate::admin::bearer;
use crate::budget::Budget;
use crate::budget::period::{self, Period};
use crate::config::KEY_PREFIX;
use crate::dto::{Items, KeyCreated, NewKey};
use crate::error::HttpError;
use crate::ledger::Slot;
use crate::money::Money;
use crate::record::KeyKind;
use crate::record::KeyView;
use crate::store;
use crate::store::keys::{Found, NewKeyRow};
use crate::team::TeamKey;
use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use std::sync::{Arc, LazyLock};
use tokio_util::sync::CancellationToken;

/// What a key is made with besides its credential.
#[derive(Debug, Default)]
pub(super) struct Terms {
    /// A sign-in's refresh token's hash.
    pub refresh_hash: Option<String>,
    /// Its own cap and period: a scope below its budget.
    pub cap: Option<(Money, Period)>,
    /// A refreshed sign-in's lineage: its first token's hash.
    pub lineage: Option<String>,
    /// The scope its refreshed predecessor had (with its spend and reservations in flight).
    pub kept: Option<Arc<Slot>>,
}

/// How often keys' last uses are saved; a crash forgets at most this much of them.
pub const SAVE_USES_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

pub(super) fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A key change the team database did not take (and this proxy did not make).
pub(super) fn unshared(
    key: &str,
    budget: &str,
    done: &str,
    e: crate::team::TeamError,
) -> HttpError {
    HttpError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        format!(
            "agent-budget: key '{key}' of budget '{budget}' was not {done}: {e}, and the other proxies must know the same keys; try again once it answers"
        ),
    )
}

fn unauthorized(msg: impl Into<String>) -> HttpError {
    HttpError::new(StatusCode::UNAUTHORIZED, "authentication_error", msg)
        .with_header("x-should-retry", "false")
}

/// Every credential the request carries: each `x-api-key`, and each bearer `authorization`.
/// A value that is not visible ASCII is kept as "" (it is no virtual key, but it is one more
/// credential).
fn credentials(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let keys = headers
        .get_all("x-api-key")
        .iter()
        .map(|v| v.to_str().map_or("", str::trim));
    let bearers = headers
        .get_all("authorization")
        .iter()
        .map(|v| v.to_str().ok().and_then(bearer).unwrap_or(""));
    keys.chain(bearers)
}

/// Searchers for this proxy's credentials, built once: every forwarded header is searched.
static VIRTUAL_KEY: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(KEY_PREFIX));
static SIGN_IN_TOKEN: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(TOKEN_PREFIX));

/// Whether a header value carries a virtual key or a sign-in's token anywhere (neither may
/// ever go upstream).
pub fn carries_virtual_key(v: &[u8]) -> bool {
    VIRTUAL_KEY.find(v).is_some() || SIGN_IN_TOKEN.find(v).is_some()
}

/// Whether a credential is one of this proxy's: a virtual key or a sign-in's token (an
/// expired token is still ours, and refused).
fn is_ours(credential: &str) -> bool {
    credential.starts_with(KEY_PREFIX) || credential.starts_with(TOKEN_PREFIX)
}

/// The key one of this proxy's credentials is, noting its use; None if it is unknown,
/// revoked, or a sign-in's token past its `exp`.
fn budget_of(keys: &Keys, credential: &str) -> Option<Keyed> {
    let now = period::now();
    if credential.starts_with(TOKEN_PREFIX)
        && token_expiry(credential).is_none_or(|exp| exp <= now.timestamp())
    {
        return None;
    }
    keys.budget_of(credential, now.timestamp_millis())
}

const UNKNOWN: &str = "agent-budget: this key or sign-in is unknown, revoked or expired; create a new key on the budget's page, or sign in again (Claude Code: /login)";

impl Service {
    /// Swaps a request's virtual key (or sign-in) for the real one and says which key it was;
    /// refuses unknown or revoked virtual keys, a virtual key sent with any other credential
    /// (one of them would otherwise go upstream), and (with `--require-virtual-key`) any
    /// other key.
    pub fn resolve_key(&self, headers: &mut HeaderMap) -> Result<Option<Keyed>, HttpError> {
        // A credential that starts with the prefix carries it too: one scan finds both.
        let virtual_key = headers
            .get_all("x-api-key")
            .iter()
            .chain(headers.get_all("authorization"))
            .any(|v| carries_virtual_key(v.as_bytes()));
        let (first, more) = {
            let mut creds = credentials(headers);
            (creds.next(), creds.next().is_some())
        };
        if virtual_key && more {
            return Err(HttpError::invalid(
                "agent-budget: the request carries a virtual key (sk-ab-…) and another credential; send only the virtual key, as 'x-api-key' or as 'Authorization: Bearer'",
            ));
        }
        let Some(key) = first.filter(|k| virtual_key && is_ours(k)) else {
            if virtual_key {
                return Err(unauthorized(
                    "agent-budget: this virtual key is malformed; send it exactly as it was created (sk-ab-…)",
                ));
            }
            if self.config.require_virtual_key {
                return Err(unauthorized(
                    "agent-budget: this proxy accepts only its virtual keys (sk-ab-…): create one on the budget's page and send it as the API key",
                ));
            }
            return Ok(None);
        };
        let keyed = budget_of(&self.keys, key).ok_or_else(|| unauthorized(UNKNOWN))?;
        let real = self.real_key().ok_or_else(|| {
            unauthorized("agent-budget: virtual keys need the real Anthropic key, and none is set: store it in the dashboard's Settings (or with `agent-budget key set`), or start the proxy with --upstream-key-file")
        })?;
        headers.remove("authorization");
        headers.insert("x-api-key", real);
        Ok(Some(keyed))
    }

    /// The budget of the virtual key (or sign-in) a request presents, as its only credential;
    /// 401, never to be retried, for anything else (the admin token included).
    pub fn key_budget(&self, headers: &HeaderMap) -> Result<i64, HttpError> {
        self.key_of(headers).map(|(_, budget)| budget)
    }

    /// The key id and budget of the virtual key (or sign-in) a request presents, as its only
    /// credential.
    pub fn key_of(&self, headers: &HeaderMap) -> Result<(i64, i64), HttpError> {
        let mut creds = credentials(headers);
        let (first, more) = (creds.next(), creds.next().is_some());
        let key = first.filter(|k| !more && is_ours(k)).ok_or_else(|| {
            unauthorized("agent-budget: send the virtual key (sk-ab-…) or the sign-in's token as 'Authorization: Bearer', alone")
        })?;
        budget_of(&self.keys, key)
            .map(|k| (k.id, k.budget_id))
            .ok_or_else(|| unauthorized(UNKNOWN))
    }

    /// Makes a key; on a team (for a budget other than `default`) it is shared first with the
    /// other proxies, and not made at all if the team database does not take it.
    pub async fn create_key(&self, budget: &str, input: NewKey) -> Result<KeyCreated, HttpError> {
        let name = input.name.trim().to_string();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(HttpError::invalid(
                "field 'name' must be 1 to 64 characters without control characters (e.g. \"laptop\" or \"ci\")",
            ));
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| {
            HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                format!("agent-budget: no randomness for a key: {e}"),
            )
        })?;
        let key = format!("{KEY_PREFIX}{}", hex::encode(bytes));
        let cap = self.key_cap(budget, input.max_dollars, input.period)?;
        let terms = Terms {
            cap,
            ..Terms::default()
        };
        let (id, at) = self
            .add_key(budget, &name, KeyKind::Key, &key, terms)
            .await?;
        Ok(KeyCreated {
            id,
            name,
            key,
            created_at: self.config.zone.render(at),
        })
    }

    /// Keeps a credential as a key of `budget` (its hash only), with its scope if it has a
    /// cap; on a team it is shared first with the other proxies, and not kept at all if the
    /// team database does not take it. Returns its id and when it was made.
    pub(super) async fn add_key(
        &self,
        budget: &str,
        name: &str,
        kind: KeyKind,
        credential: &str,
        terms: Terms,
    ) -> Result<(i64, chrono::DateTime<chrono::Utc>), HttpError> {
        let _in_step = self.budget_changes.lock().await;
        let owner = self.slot(budget)?.budget();
        let (h, at) = (hash(credential), period::now());
        let Terms {
            refresh_hash,
            cap,
            lineage,
            kept,
        } = terms;
        if let Some(team) = self.team_of(&owner.name) {
            let shared = TeamKey {
                hash: h.clone(),
                budget: owner.name.clone(),
                name: name.to_string(),
                created_at: at.timestamp_millis(),
                revoked: false,
                sign_in: kind == KeyKind::SignIn,
                refresh_hash: refresh_hash.clone(),
                cap,
                lineage: lineage.clone(),
            };
            team.put_key(&shared)
                .await
                .map_err(|e| unshared(name, &owner.name, "created", e))?;
        }
        let (h2, n, budget_id, l) = (h.clone(), name.to_string(), owner.id, lineage.clone());
        let id = self
            .store
            .writer
            .run(move |tx| {
                let row = NewKeyRow {
                    budget_id,
                    name: &n,
                    kind,
                    hash: &h2,
                    refresh_hash: refresh_hash.as_deref(),
                    cap,
                    lineage: l.as_deref(),
                };
                store::keys::insert(tx, &row, at)
            })
            .await?;
        // Scoped before it is live: no request with it may miss its cap.
        if let Some(cap) = cap {
            let lineage = lineage.as_deref().unwrap_or(&h);
            self.scope_key((id, budget), (name, lineage), cap, at, kept)
                .await?;
        }
        self.keys.add(store::keys::Active {
            hash: h,
            id,
            budget_id,
            lineage,
        });
        Ok((id, at))
    }

    /// Revokes the key a credential is (or a sign-in's refresh token belongs to), wherever
    /// it is (RFC 7009: an unknown one is no error).
    pub async fn revoke_credential(&self, credential: &str) -> Result<(), HttpError> {
        let h = hash(credential);
        let (id, budget_id) = match self.keys.find(&h) {
            Some(found) => found,
            None => match self
                .store
                .read(move |c| store::keys::by_refresh(c, &h))
                .await?
            {
                Some(k) => (k.id, k.budget_id),
                None => return Ok(()),
            },
        };
        match self
            .revoke_key(&budget_id.to_string(), &id.to_string())
            .await
        {
            Err(e) if e.status == StatusCode::CONFLICT || e.status == StatusCode::NOT_FOUND => {
                Ok(())
            }
            other => other,
        }
    }

    pub async fn list_keys(&self, budget: &str) -> Result<Items<KeyView>, HttpError> {
        let budget_id = self.slot(budget)?.status(period::now()).budget.id;
        let (zone, used) = (self.config.zone, self.keys.uses(budget_id));
        let mut items = self
            .store
            .read(move |c| store::keys::list(c, budget_id, &used, zone))
            .await?;
        for k in &mut items {
            k.spent_dollars = self.key_spent(k.id);
        }
        Ok(Items { items })
    }

    /// What a capped key has spent this period (the team's figure on a team).
    pub(super) fn key_spent(&self, key_id: i64) -> Option<Money> {
        let slot = self.ledger.key_scope(key_id)?;
        let here = slot.status(period::now());
        let team = slot
            .key_hash()
            .and_then(|h| self.team_figures(&format!("{}{h}", crate::team::KEY_SCOPE), &here));
        Some(team.unwrap_or(here).period.dollars)
    }

    /// Revokes a key; on a team the revocation is shared first, so no proxy goes on taking a
    /// key this one refuses.
    pub async fn revoke_key(&self, budget: &str, key_id: &str) -> Result<(), HttpError> {
        let _in_step = self.budget_changes.lock().await;
        let owner = self.slot(budget)?.budget();
        let Found {
            view: key,
            hash,
            created_at,
            ..
        } = self.live_key(&owner, key_id).await?;
        let id = key.id;
        if let Some(team) = self.team_of(&owner.name) {
            let revoked = TeamKey {
                hash: hash.clone(),
                budget: owner.name.clone(),
                name: key.name.clone(),
                created_at,
                revoked: true,
                sign_in: key.kind == KeyKind::SignIn,
                refresh_hash: None,
                cap: None,
                lineage: None,
            };
            let first = team
                .put_key(&revoked)
                .await
                .map_err(|e| unshared(&key.name, &owner.name, "revoked", e))?;
            if !first {
                // Another proxy revoked it first (a refresh token is spent once, team-wide).
                self.revoke_here(id, &hash).await?;
                return Err(HttpError::new(
                    StatusCode::CONFLICT,
                    "conflict_error",
                    format!(
                        "key {id} of budget '{budget}' was already revoked on another proxy of the team"
                    ),
                ));
            }
        }
        self.revoke_here(id, &hash).await
    }

    /// One of a budget's keys that is not revoked: 400 for an id that is none, 404 for a key
    /// not the budget's, 409 for a revoked one.
    pub(super) async fn live_key(&self, owner: &Budget, key_id: &str) -> Result<Found, HttpError> {
        let id: i64 = key_id.parse().map_err(|_| {
            HttpError::invalid(format!(
                "'{key_id}' is not a key id: use the id GET …/keys lists"
            ))
        })?;
        let (budget_id, zone) = (owner.id, self.config.zone);
        let found = self
            .store
            .read(move |c| store::keys::find(c, budget_id, id, zone))
            .await?
            .ok_or_else(|| {
                HttpError::not_found(format!("budget '{}' has no key {id}", owner.name))
            })?;
        match &found.view.revoked_at {
            Some(at) => Err(HttpError::new(
                StatusCode::CONFLICT,
                "conflict_error",
                format!(
                    "key {id} of budget '{}' was already revoked at {at}",
                    owner.name
                ),
            )),
            None => Ok(found),
        }
    }

    /// Revokes a key in this proxy's table and lookup, keeping its last use.
    pub(super) async fn revoke_here(&self, id: i64, hash: &str) -> Result<(), HttpError> {
        self.ledger.remove_key(id);
        let at = period::now();
        self.store
            .writer
            .run(move |tx| store::keys::revoke(tx, id, at))
            .await?;
        if let Some(last) = self.keys.remove(hash) {
            self.save_uses(vec![last]).await;
        }
        Ok(())
    }

    /// Saves the keys' last uses noted since the last save.
    pub async fn save_key_uses(&self) {
        self.save_uses(self.keys.unsaved()).await;
    }

    async fn save_uses(&self, uses: Vec<(i64, i64)>) {
        if uses.is_empty() {
            return;
        }
        let (saving, n) = (uses.clone(), uses.len());
        match self
            .store
            .writer
            .run(move |tx| store::keys::save_uses(tx, &saving))
            .await
        {
            Ok(()) => self.keys.mark_saved(&uses),
            // Kept in memory (the list still shows them) and tried again at the next save.
            Err(e) => tracing::warn!(error = %e, keys = n, "could not save virtual keys' last use"),
        }
    }
}

/// Saves keys' last uses and the subscriptions' windows every few seconds until `stop`;
/// shutdown saves the rest.
pub async fn save_uses_until(app: std::sync::Arc<Service>, stop: CancellationToken) {
    let mut every = tokio::time::interval(SAVE_USES_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {
                app.save_key_uses().await;
                app.save_subscriptions().await;
            }
        }
    }
}

mod lookup;
pub use lookup::{Keyed, Keys};

#[cfg(test)]
mod tests;
