//! The keys not revoked, by hash: the proxy looks each request's key up here, never in the
//! database, and notes when it was last used.

use super::hash;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

/// The keys not revoked, by hash.
#[derive(Debug, Default)]
pub struct Keys(RwLock<HashMap<String, Entry>>);

/// A live key a request carries.
#[derive(Clone, Debug)]
pub struct Keyed {
    pub id: i64,
    pub budget_id: i64,
    /// Its lineage's first key's hash (its own, unless it is a refreshed sign-in's token):
    /// what names it in the team's records.
    pub lineage: Arc<str>,
}

#[derive(Debug)]
struct Entry {
    id: i64,
    budget_id: i64,
    lineage: Arc<str>,
    /// When a request last carried the key, in milliseconds (0: not since the start); noted
    /// under the read lock, so a request never waits for another to note its own use.
    used: AtomicI64,
    /// The last `used` saved to the database.
    saved: AtomicI64,
}

impl Entry {
    fn new(k: crate::store::keys::Active) -> (String, Entry) {
        let entry = Entry {
            id: k.id,
            budget_id: k.budget_id,
            lineage: Arc::from(k.lineage.as_deref().unwrap_or(&k.hash)),
            used: AtomicI64::new(0),
            saved: AtomicI64::new(0),
        };
        (k.hash, entry)
    }
    fn unsaved(&self) -> Option<(i64, i64)> {
        let used = self.used.load(Ordering::Relaxed);
        (used > self.saved.load(Ordering::Relaxed)).then_some((self.id, used))
    }
}

impl Keys {
    pub fn load(active: Vec<crate::store::keys::Active>) -> Keys {
        Keys(RwLock::new(active.into_iter().map(Entry::new).collect()))
    }
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
    /// The key, noting that it was used at `now` (milliseconds).
    pub(in crate::service) fn budget_of(&self, key: &str, now: i64) -> Option<Keyed> {
        let map = self.read();
        let e = map.get(&hash(key))?;
        e.used.fetch_max(now, Ordering::Relaxed);
        Some(Keyed {
            id: e.id,
            budget_id: e.budget_id,
            lineage: e.lineage.clone(),
        })
    }
    pub(in crate::service) fn add(&self, key: crate::store::keys::Active) {
        let (hash, entry) = Entry::new(key);
        self.write().insert(hash, entry);
    }
    /// Forgets a revoked key; its last use if that is not saved yet.
    pub(in crate::service) fn remove(&self, hash: &str) -> Option<(i64, i64)> {
        self.write().remove(hash).and_then(|e| e.unsaved())
    }
    /// A live key's id and budget, by hash.
    pub(in crate::service) fn find(&self, hash: &str) -> Option<(i64, i64)> {
        self.read().get(hash).map(|e| (e.id, e.budget_id))
    }
    /// Forgets a deleted budget's keys.
    pub fn forget_budget(&self, budget_id: i64) {
        self.write().retain(|_, e| e.budget_id != budget_id);
    }
    /// Last uses not saved yet: (key id, milliseconds).
    pub(in crate::service) fn unsaved(&self) -> Vec<(i64, i64)> {
        self.read().values().filter_map(Entry::unsaved).collect()
    }
    pub(in crate::service) fn mark_saved(&self, uses: &[(i64, i64)]) {
        let saved: HashMap<i64, i64> = uses.iter().copied().collect();
        for e in self.read().values() {
            if let Some(&t) = saved.get(&e.id) {
                e.saved.fetch_max(t, Ordering::Relaxed);
            }
        }
    }
    /// A budget's keys' last uses since the start, by key id.
    pub(in crate::service) fn uses(&self, budget_id: i64) -> HashMap<i64, i64> {
        self.read()
            .values()
            .filter(|e| e.budget_id == budget_id)
            .map(|e| (e.id, e.used.load(Ordering::Relaxed)))
            .filter(|&(_, t)| t > 0)
            .collect()
    }
}
