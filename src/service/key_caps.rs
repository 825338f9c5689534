//! Keys with their own cap: a scope below their budget in the ledger (docs/budgets.md).

use super::Service;
use crate::budget::period::{self, Period, Zone};
use crate::dto::NewKey;
use crate::error::HttpError;
use crate::ledger::History;
use crate::ledger::chain::KeyScope;
use crate::money::Money;
use crate::store::{self, Store, StoreError};
use chrono::{DateTime, Utc};

impl Service {
    /// A new key's cap and period, checked: a positive cap; a period only with a cap (the
    /// budget's when left out).
    pub(super) fn key_cap(
        &self,
        budget: &str,
        input: &NewKey,
    ) -> Result<Option<(Money, Period)>, HttpError> {
        let Some(cap) = input.max_dollars else {
            return match input.period {
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
        let period = input.period.unwrap_or_else(|| {
            self.slot(budget)
                .map(|s| s.budget().period)
                .unwrap_or_default()
        });
        Ok(Some((cap, period)))
    }

    /// Makes a new key's scope in the ledger (it has spent nothing yet).
    pub(super) fn scope_key(
        &self,
        key_id: i64,
        budget: &str,
        (name, hash): (&str, &str),
        (max_dollars, period): (Money, Period),
        created_at: DateTime<Utc>,
    ) -> Result<(), HttpError> {
        let scope = KeyScope {
            key_id,
            budget_id: self.slot(budget)?.id(),
            name: name.to_string(),
            hash: hash.to_string(),
            max_dollars,
            period,
            created_at,
        };
        self.ledger
            .insert_key(scope, History::default(), period::now());
        Ok(())
    }
}

/// Every capped key's scope with its spend by day, from the records that name it.
pub(super) async fn load(
    store: &Store,
    ledger: &crate::ledger::Ledger,
    zone: Zone,
) -> Result<(), StoreError> {
    let now = period::now();
    for k in store.read(store::keys::capped).await? {
        let id = k.id;
        let spend = store.read(move |c| store::usage::key_spend(c, id)).await?;
        let mut history = History::default();
        for (at, totals) in spend {
            history.days.entry(zone.day(at)).or_default().add(totals);
        }
        let scope = KeyScope {
            key_id: k.id,
            budget_id: k.budget_id,
            name: k.name,
            hash: k.hash,
            max_dollars: k.max_dollars,
            period: k.period,
            created_at: k.created_at,
        };
        ledger.insert_key(scope, history, now);
    }
    Ok(())
}
