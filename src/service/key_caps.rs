//! Keys with their own cap: a scope below their budget in the ledger (docs/budgets.md). A
//! sign-in's tokens, one key per refresh, are one lineage and share one scope.

use super::Service;
use crate::budget::period::{self, Period, Zone};
use crate::error::HttpError;
use crate::ledger::chain::KeyScope;
use crate::ledger::{History, Ledger, Slot};
use crate::money::Money;
use crate::store::{self, Store, StoreError};
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
        ledger.attach_key(key.key_id, scope);
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
