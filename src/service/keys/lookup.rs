//! The keys not revoked, by hash: the proxy looks each request's key up here, never in the
//! database, and notes when it was last used.

use super::hash;
use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};

/// The keys not revoked, by hash.
#[derive(Debug, Default)]
pub struct Keys(RwLock<HashMap<String, Entry>>);

#[derive(Debug)]
struct Entry {
    id: i64,
    budget_id: i64,
    /// When a request last carried the key, in milliseconds (0: not since the start); noted
    /// under the read lock, so a request never waits for another to note its own use.
    used: AtomicI64,
    /// The last `used` saved to the database.
    saved: AtomicI64,
}

impl Entry {
    fn new(id: i64, budget_id: i64) -> Entry {
        Entry {
            id,
            budget_id,
            used: AtomicI64::new(0),
            saved: AtomicI64::new(0),
        }
    }
    fn unsaved(&self) -> Option<(i64, i64)> {
        let used = self.used.load(Ordering::Relaxed);
        (used > self.saved.load(Ordering::Relaxed)).then_some((self.id, used))
    }
}

impl Keys {
    pub fn load(active: Vec<(String, i64, i64)>) -> Keys {
        Keys(RwLock::new(
            active
                .into_iter()
                .map(|(h, id, b)| (h, Entry::new(id, b)))
                .collect(),
        ))
    }
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
    /// The key's id and budget, noting that it was used at `now` (milliseconds).
    pub(in crate::service) fn budget_of(&self, key: &str, now: i64) -> Option<(i64, i64)> {
        let map = self.read();
        let e = map.get(&hash(key))?;
        e.used.fetch_max(now, Ordering::Relaxed);
        Some((e.id, e.budget_id))
    }
    pub(in crate::service) fn add(&self, hash: String, id: i64, budget_id: i64) {
        self.write().insert(hash, Entry::new(id, budget_id));
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
