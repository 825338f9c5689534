//! Keys with their own cap: a scope below their budget in the ledger (docs/budgets.md). A
//! sign-in's tokens, one key per refresh, are one lineage and share one scope.

use super::Service;
use super::keys::unshared;
use crate::budget::period::{self, Period, Zone};
use crate::dto::KeyPatch;
use crate::error::HttpError;
use crate::ledger::chain::KeyScope;
use crate::ledger::{History, Ledger, Slot};
use crate::money::Money;
use crate::record::KeyView;
use crate::store::{self, Store, StoreError};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use std::sync::Arc;

impl Service {
    /// A new key's (or sign-in's) cap and period, checked: a positive cap; a period only with
    /// a cap (the budget's when left out).
    pub(super) fn key_cap(
        &self,
        budget: &str,
        max_dollars: Option<Money>,
        period: Option<Period>,
    ) -> Result<Option<(Money, Period)>, HttpError> {
        let Some(cap) = max_dollars else {
            return match period {
                Some(_) => Err(HttpError::invalid(
                    "field 'period' needs 'max_dollars': a key's period is its cap's",
                )),
                None => Ok(None),
            };
        };
        if !cap.is_positive() {
            return Err(HttpError::invalid(
                "field 'max_dollars' must be greater than 0 (or left out: only the budget's caps apply)",
            ));
        }
        let period = period.unwrap_or_else(|| {
            self.slot(budget)
                .map(|s| s.budget().period)
                .unwrap_or_default()
        });
        Ok(Some((cap, period)))
    }

    /// What a request is reserved on: its key's scope when the key has its own cap, then its
    /// budget and the budget's ancestors.
    pub fn chain_of(&self, slot: &Arc<Slot>, key: Option<i64>) -> Vec<Arc<Slot>> {
        let mut chain = self.ledger.chain(slot);
        if let Some(scope) = key.and_then(|k| self.ledger.key_scope(k)) {
            chain.insert(0, scope);
        }
        chain
    }

    /// Gives a new capped key its scope in the ledger: `kept` (its refreshed predecessor's),
    /// or that of another key of its lineage here, or a new one.
    pub(super) async fn scope_key(
        &self,
        (key_id, budget): (i64, &str),
        (name, lineage): (&str, &str),
        (max_dollars, period): (Money, Period),
        created_at: DateTime<Utc>,
        kept: Option<Arc<Slot>>,
    ) -> Result<(), HttpError> {
        let scope = KeyScope {
            key_id,
            budget_id: self.slot(budget)?.id(),
            name: name.to_string(),
            lineage: lineage.to_string(),
            max_dollars,
            period,
            created_at,
        };
        Ok(scope_in(&self.store, &self.ledger, self.config.zone, scope, kept).await?)
    }

    /// `PATCH /api/budgets/:id/keys/:key_id`: changes a key's (or sign-in's) own cap while it
    /// is in use; its spend this period and its requests in flight count against the new cap
    /// at once. On a team the change is shared first, and not made if the team does not take it.
    pub async fn patch_key(
        &self,
        budget: &str,
        key_id: &str,
        patch: KeyPatch,
    ) -> Result<KeyView, HttpError> {
        let _in_step = self.budget_changes.lock().await;
        let owner = self.slot(budget)?.budget();
        let found = self.live_key(&owner, key_id).await?;
        let cap = self.patched_cap(&owner.name, &found.view, patch)?;
        let id = found.view.id;
        if let Some(team) = self.team_of(&owner.name) {
            let live = team
                .set_key_cap(&found.hash, cap)
                .await
                .map_err(|e| unshared(&found.view.name, &owner.name, "changed", e))?;
            if !live {
                return Err(HttpError::new(
                    StatusCode::CONFLICT,
                    "conflict_error",
                    format!(
                        "key {id} of budget '{}' was revoked on another proxy of the team",
                        owner.name
                    ),
                ));
            }
        }
        let created_at = period::from_millis(found.created_at);
        let named = (found.view.name.as_str(), found.lineage.as_str());
        self.cap_here((id, &owner.name), named, created_at, cap)
            .await?;
        let mut view = found.view;
        (view.max_dollars, view.period) = (cap.map(|c| c.0), cap.map(|c| c.1));
        view.spent_dollars = self.key_spent(id);
        Ok(view)
    }

    /// The cap a patch leaves a key with: a new cap keeps the key's period unless the patch
    /// gives one; `null` takes the cap away.
    fn patched_cap(
        &self,
        budget: &str,
        key: &KeyView,
        patch: KeyPatch,
    ) -> Result<Option<(Money, Period)>, HttpError> {
        match (patch.max_dollars, key.max_dollars) {
            (Some(None), _) => match patch.period {
                Some(_) => Err(HttpError::invalid(
                    "field 'period' needs 'max_dollars': a key's period is its cap's (send either `\"max_dollars\": null` alone, or a cap)",
                )),
                None => Ok(None),
            },
            (Some(Some(cap)), _) => self.key_cap(budget, Some(cap), patch.period.or(key.period)),
            (None, Some(cap)) => Ok(Some((cap, patch.period.or(key.period).unwrap_or_default()))),
            (None, None) => self.key_cap(budget, None, patch.period),
        }
    }

    /// Sets a key's cap in this proxy's table and ledger: its scope changed, made (its spend
    /// rebuilt from its lineage's records) or dropped.
    pub(super) async fn cap_here(
        &self,
        (id, budget): (i64, &str),
        (name, lineage): (&str, &str),
        created_at: DateTime<Utc>,
        cap: Option<(Money, Period)>,
    ) -> Result<(), HttpError> {
        self.store
            .writer
            .run(move |tx| store::keys::set_cap(tx, id, cap))
            .await?;
        match cap {
            None => self.ledger.remove_key(id),
            Some(cap) if !self.ledger.update_key(id, cap, period::now()) => {
                self.scope_key((id, budget), (name, lineage), cap, created_at, None)
                    .await?;
            }
            Some(_) => {}
        }
        Ok(())
    }
}

/// Puts a key's scope in the ledger: `kept`, or the scope another key of its lineage has
/// there, or a new one whose spend by day is rebuilt from the records of its lineage's keys.
async fn scope_in(
    store: &Store,
    ledger: &Ledger,
    zone: Zone,
    key: KeyScope,
    kept: Option<Arc<Slot>>,
) -> Result<(), StoreError> {
    if let Some(scope) = kept.or_else(|| ledger.lineage_scope(&key.lineage)) {
        // With the key's cap: a refreshed token takes its predecessor's as the team has it,
        // which this proxy's scope may not have followed yet.
        ledger.attach_key(key.key_id, scope);
        ledger.update_key(key.key_id, (key.max_dollars, key.period), period::now());
        return Ok(());
    }
    let lineage = key.lineage.clone();
    let spend = store
        .read(move |c| store::usage::lineage_spend(c, &lineage))
        .await?;
    let mut history = History::default();
    for (at, totals) in spend {
        history.days.entry(zone.day(at)).or_default().add(totals);
    }
    ledger.insert_key(key, history, period::now());
    Ok(())
}

/// Every live capped key's scope, at start-up.
pub(super) async fn load(store: &Store, ledger: &Ledger, zone: Zone) -> Result<(), StoreError> {
    for k in store.read(store::keys::capped).await? {
        let scope = KeyScope {
            key_id: k.id,
            budget_id: k.budget_id,
            name: k.name,
            lineage: k.lineage,
            max_dollars: k.max_dollars,
            period: k.period,
            created_at: k.created_at,
        };
        scope_in(store, ledger, zone, scope, None).await?;
    }
    Ok(())
}
