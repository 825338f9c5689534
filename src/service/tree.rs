//! Budgets that nest: a `parent` resolved and checked against this proxy's budgets (no cycle,
//! not `default`), and each budget's spend history holding its whole subtree's.

use super::Service;
use crate::budget::period;
use crate::budget::{Budget, BudgetRef, DEFAULT_BUDGET, Invalid, Parents};
use crate::error::HttpError;
use crate::ledger::{History, Ledger, chain};
use crate::store::{self, Store, StoreError};
use std::collections::HashMap;

/// Resolves `parent` fields for `child` (None while it is being made).
pub(super) struct Tree<'a> {
    pub ledger: &'a Ledger,
    pub child: Option<&'a Budget>,
}

fn bad(rule: String) -> Invalid {
    Invalid {
        field: "parent",
        rule,
    }
}

/// A chain is at most `MAX_DEPTH` budgets: admission follows no more, so none may be longer.
fn within_depth(levels: usize) -> Result<(), Invalid> {
    if levels > chain::MAX_DEPTH {
        return Err(bad(format!(
            "would nest deeper than {} levels",
            chain::MAX_DEPTH
        )));
    }
    Ok(())
}

impl Tree<'_> {
    /// How many levels a budget and the deepest of its descendants span (1 for a leaf).
    fn height(&self, id: i64) -> usize {
        self.ledger
            .slots()
            .iter()
            .filter_map(|slot| self.ledger.chain(slot).iter().position(|s| s.id() == id))
            .max()
            .map_or(1, |i| i + 1)
    }
}

impl Parents for Tree<'_> {
    fn resolve(&self, p: &BudgetRef) -> Result<i64, Invalid> {
        let key = p.key();
        let slot = self.ledger.find(&key).ok_or_else(|| {
            // Names are at most 64 characters: a longer one is shown cut, never echoed whole.
            let shown: String = key.chars().take(64).collect();
            bad(format!(
                "names no budget: '{shown}' does not exist (give a budget's name or id)"
            ))
        })?;
        let parent = slot.budget();
        if parent.name == DEFAULT_BUDGET {
            return Err(bad("cannot be 'default': it takes the requests no budget claims, and is never below or above another".into()));
        }
        let above = self.ledger.chain(&slot);
        let Some(child) = self.child else {
            return within_depth(above.len() + 1).map(|_| parent.id);
        };
        if child.name == DEFAULT_BUDGET {
            return Err(bad("cannot be set on 'default'".into()));
        }
        if above.iter().any(|s| s.id() == child.id) {
            return Err(bad(format!(
                "would make a cycle: '{}' is '{}' or below it",
                parent.name, child.name
            )));
        }
        within_depth(above.len() + self.height(child.id))?;
        Ok(parent.id)
    }
}

/// Each budget's spend history (by day and over the last hour), with its descendants' rolled
/// into it; alerts raised are the caller's to add.
pub(super) async fn histories(
    store: &Store,
    budgets: &[Budget],
    zone: period::Zone,
) -> Result<HashMap<i64, History>, StoreError> {
    let now = period::now();
    let mut days = store.read(store::budgets::days).await?;
    let since = now - chrono::Duration::milliseconds(crate::budget::rate::WINDOW_MS);
    let mut out = HashMap::new();
    for b in budgets {
        let id = b.id;
        let (worst_cases, last_hour) = store
            .read(move |c| {
                Ok((
                    store::usage::recent_worst_cases(c, id, crate::ledger::RECENT_WORST_CASES)?,
                    store::usage::costs_since(c, id, since)?,
                ))
            })
            .await?;
        let sessions = match b.max_session_dollars {
            Some(_) => session_spend(store, b, zone).await?,
            None => Vec::new(),
        };
        let h = History {
            days: days.remove(&id).unwrap_or_default(),
            alerted: Default::default(),
            worst_cases,
            last_hour,
            sessions,
        };
        out.insert(id, h);
    }
    let parents: HashMap<i64, i64> = budgets
        .iter()
        .filter_map(|b| Some((b.id, b.parent?)))
        .collect();
    chain::roll_up(&mut out, &parents);
    Ok(out)
}

/// Each session's spend in the budget's current period, from its records.
pub(super) async fn session_spend(
    store: &Store,
    b: &Budget,
    zone: period::Zone,
) -> Result<Vec<(String, crate::money::Money)>, StoreError> {
    let (id, now) = (b.id, period::now());
    let since = period::window(b.period, b.created_at, now, zone).start;
    store
        .read(move |c| store::usage::session_spend_since(c, id, since))
        .await
}

impl Service {
    /// The names of a budget's children.
    pub(super) fn children(&self, id: i64) -> Vec<String> {
        let mut names: Vec<String> = self
            .ledger
            .slots()
            .iter()
            .filter(|s| s.parent() == Some(id))
            .map(|s| s.name())
            .collect();
        names.sort();
        names
    }

    /// A budget's ancestors' names, nearest first.
    pub(super) fn ancestors(&self, key: &str) -> Vec<String> {
        let Some(slot) = self.ledger.find(key) else {
            return Vec::new();
        };
        self.ledger.chain(&slot)[1..]
            .iter()
            .map(|s| s.name())
            .collect()
    }

    /// After a budget moved in the tree: every budget's history is read again, so each holds
    /// its new subtree's spend.
    pub(super) async fn rebase(&self) -> Result<(), HttpError> {
        let budgets: Vec<Budget> = self.ledger.slots().iter().map(|s| s.budget()).collect();
        let h = histories(&self.store, &budgets, self.config.zone).await?;
        self.ledger.rebase(h);
        Ok(())
    }
}
