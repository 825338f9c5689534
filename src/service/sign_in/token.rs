//! A sign-in's tokens: signed, kept as keys of its budget, and traded for new ones at each
//! refresh. The tokens of one sign-in are a lineage: a cap it was approved with holds across
//! all of them, with one spend.

use super::{PROJECT_TAG, Refused, TOKEN_DAYS, TOKEN_PREFIX, Token, random_hex};
use crate::budget::period::{self, Period};
use crate::error::HttpError;
use crate::money::Money;
use crate::record::KeyKind;
use crate::service::Service;
use crate::service::keys::{Terms, hash, unshared};
use crate::store::keys::{self, Refreshed};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

impl Service {
    /// A new token for a sign-in of `budget`, kept as a key of it with its refresh token.
    pub(super) async fn issue(
        &self,
        budget: &str,
        name: &str,
        mut terms: Terms,
    ) -> Result<Token, HttpError> {
        let (access_token, expires_in) = self.mint(budget)?;
        let refresh_token = format!("abr_{}", random_hex()?);
        terms.refresh_hash = Some(hash(&refresh_token));
        self.add_key(budget, name, KeyKind::SignIn, &access_token, terms)
            .await?;
        Ok(Token {
            access_token,
            token_type: "Bearer",
            expires_in,
            refresh_token,
        })
    }

    /// `POST /oauth/token` with `grant_type=refresh_token`: a new token (and refresh token)
    /// for the same budget, with the same cap and spend; the old token is revoked, and the
    /// refresh token is spent.
    pub async fn refresh_sign_in(&self, refresh_token: &str) -> Result<Token, Refused> {
        let h = hash(refresh_token);
        let found = self
            .store
            .read(move |c| keys::by_refresh(c, &h))
            .await
            .ok()
            .flatten();
        let old = found.ok_or(Refused::Refresh)?;
        let budget = old.budget_id.to_string();
        // Held across the revocation, which takes it from the ledger: requests in flight on
        // the old token stay counted against the new one.
        let kept = self.ledger.key_scope(old.id);
        // Revoked first: a refresh token that raced itself gets one token, not two.
        self.revoke_key(&budget, &old.id.to_string())
            .await
            .map_err(|_| Refused::Refresh)?;
        let cap = self.final_cap(&old).await.map_err(|e| {
            tracing::warn!("a sign-in could not be refreshed: {}", e.message);
            Refused::Refresh
        })?;
        let terms = Terms {
            refresh_hash: None,
            cap,
            lineage: Some(old.lineage),
            kept,
        };
        self.issue(&budget, &old.name, terms).await.map_err(|e| {
            tracing::warn!("a sign-in could not be refreshed: {}", e.message);
            Refused::Refresh
        })
    }

    /// A revoked key's cap, which no change reaches any more (a change is made on live keys
    /// only): the team's on a team, where another proxy may have changed it a moment ago
    /// without this one having followed yet; else this proxy's, as it is after the revocation.
    async fn final_cap(&self, old: &Refreshed) -> Result<Option<(Money, Period)>, HttpError> {
        let owner = self.slot(&old.budget_id.to_string())?.budget();
        if let Some(team) = self.team_of(&owner.name) {
            let held = team
                .key_cap(&old.hash)
                .await
                .map_err(|e| unshared(&old.name, &owner.name, "refreshed", e))?;
            if let Some(cap) = held {
                return Ok(cap);
            }
        }
        let id = old.id;
        Ok(self.store.read(move |c| keys::cap_of(c, id)).await?)
    }

    /// A signed token for a sign-in of `budget`, and its lifetime in seconds.
    fn mint(&self, budget: &str) -> Result<(String, i64), HttpError> {
        let now = period::now();
        let expires_in = TOKEN_DAYS * 24 * 3600;
        let payload = serde_json::json!({
            "iss": "agent-budget",
            "sub": budget,
            "iat": now.timestamp(),
            "exp": now.timestamp() + expires_in,
            "jti": random_hex()?,
            "billing_group_tag": PROJECT_TAG,
        });
        let body = format!(
            "{TOKEN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.token_key)
            .map_err(|e| HttpError::invalid(e.to_string()))?;
        mac.update(body.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok((format!("{body}.{signature}"), expires_in))
    }
}

/// When a sign-in's token expires (its `exp`), if it is one of ours and says.
pub fn token_expiry(token: &str) -> Option<i64> {
    let payload = token.strip_prefix(TOKEN_PREFIX)?.split('.').next()?;
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<serde_json::Value>(&json).ok()?["exp"].as_i64()
}
