//! A budget and its ancestors: a request is admitted only if it fits every scope on the chain,
//! reserved on all of them at once and settled on all of them.

use super::{Account, History, Ledger, Limit, Refusal, Room, Slot, Status, Totals};
use crate::money::Money;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

/// The deepest chain followed (the API refuses cycles; this bounds a broken database).
pub const MAX_DEPTH: usize = 32;

/// A key with its own cap, as a scope: a budget of its own (id the key's id negated, so it
/// never meets a budget's, and locked before any budget), below the key's budget.
pub struct KeyScope {
    pub key_id: i64,
    pub budget_id: i64,
    pub name: String,
    /// The SHA-256 (hex) of its lineage's first key (its own, unless it is a refreshed
    /// sign-in's token): its scope's name in a team database, shared by the lineage's keys.
    pub lineage: String,
    pub max_dollars: Money,
    pub period: crate::budget::period::Period,
    pub created_at: DateTime<Utc>,
}

impl KeyScope {
    fn budget(self) -> crate::budget::Budget {
        let mut b = crate::budget::Budget::built_in(self.created_at);
        b.id = -self.key_id;
        b.name = self.name;
        b.max_dollars = Some(self.max_dollars);
        b.period = self.period;
        // A key's use is reported on its budget: it raises no alerts of its own.
        b.thresholds = Vec::new();
        b.parent = Some(self.budget_id);
        b
    }
}

/// The scope of a lineage (its first key's hash), under whichever of its keys holds it.
fn lineage_of(by_key: &HashMap<i64, Arc<Slot>>, lineage: Option<&str>) -> Option<Arc<Slot>> {
    let lineage = lineage?;
    by_key
        .values()
        .find(|s| s.key_hash() == Some(lineage))
        .cloned()
}

/// Whether a scope is a key's rather than a budget's.
pub fn is_key(status: &Status) -> bool {
    status.budget.id < 0
}

impl Ledger {
    /// Adds a key's scope with its spend history, unless another key of its lineage has one
    /// already: then the key shares that.
    pub fn insert_key(&self, key: KeyScope, history: History, now: DateTime<Utc>) {
        let (id, lineage) = (key.key_id, key.lineage.clone());
        let slot = self.slot(key.budget(), history, now, Some(lineage));
        let mut idx = self.write();
        let slot = lineage_of(&idx.by_key, slot.key_hash()).unwrap_or(slot);
        idx.by_key.insert(id, slot);
    }

    /// The scope a key of this lineage has here, if any.
    pub fn lineage_scope(&self, lineage: &str) -> Option<Arc<Slot>> {
        lineage_of(&self.read().by_key, Some(lineage))
    }

    /// Gives a key a scope another key of its lineage had (a refreshed sign-in's token keeps
    /// its predecessor's spend and reservations in flight).
    pub fn attach_key(&self, key_id: i64, scope: Arc<Slot>) {
        self.write().by_key.insert(key_id, scope);
    }

    /// Gives a key's scope a new cap and period; its spend and reservations stay. False if
    /// the key has no scope here.
    pub fn update_key(
        &self,
        key_id: i64,
        (max_dollars, period): (Money, crate::budget::period::Period),
        now: DateTime<Utc>,
    ) -> bool {
        let Some(slot) = self.key_scope(key_id) else {
            return false;
        };
        let mut b = slot.budget();
        b.max_dollars = Some(max_dollars);
        b.period = period;
        slot.reconfigure(b, now);
        true
    }

    /// A key's scope, if it has its own cap.
    pub fn key_scope(&self, key_id: i64) -> Option<Arc<Slot>> {
        self.read().by_key.get(&key_id).cloned()
    }

    /// Every capped key's scope, once each (the keys of a lineage share one).
    pub fn key_slots(&self) -> Vec<Arc<Slot>> {
        let mut slots: Vec<Arc<Slot>> = self.read().by_key.values().cloned().collect();
        slots.sort_by_key(|s| s.id);
        slots.dedup_by_key(|s| s.id);
        slots
    }

    pub fn remove_key(&self, key_id: i64) {
        self.write().by_key.remove(&key_id);
    }

    /// Forgets the key scopes of a deleted budget.
    pub fn remove_keys_of(&self, budget_id: i64) {
        self.write()
            .by_key
            .retain(|_, s| s.parent() != Some(budget_id));
    }

    /// The chain a reservation held on `held` (a key's scope, then a budget and its
    /// ancestors) settles on now, if that is not `held` any more: its budget moved, or its key
    /// (`key`, its id) was given a cap since. A key's scope it was held on stays (a refreshed
    /// sign-in's token has another id by now). Allocates nothing when nothing changed.
    pub fn moved(&self, held: &[Arc<Slot>], key: Option<i64>) -> Option<Vec<Arc<Slot>>> {
        let keyed = usize::from(held.first().is_some_and(|s| s.key_hash().is_some()));
        let (scope, budgets) = held.split_at(keyed);
        let capped_since = match scope {
            [] => key.and_then(|k| self.key_scope(k)),
            _ => None,
        };
        let linked = budgets.windows(2).all(|w| w[0].parent() == Some(w[1].id))
            && budgets.last().is_some_and(|s| s.parent().is_none());
        if linked && capped_since.is_none() {
            return None;
        }
        let mut chain: Vec<Arc<Slot>> = scope.iter().cloned().chain(capped_since).collect();
        chain.extend(self.chain(budgets.first()?));
        Some(chain)
    }

    /// The names of a budget and all its descendants.
    pub fn subtree(&self, name: &str) -> Vec<String> {
        let idx = self.read();
        let Some(root) = idx.by_name.get(name).map(|s| s.id) else {
            return vec![name.to_string()];
        };
        let parents: std::collections::HashMap<i64, Option<i64>> =
            idx.by_id.iter().map(|(id, s)| (*id, s.parent())).collect();
        let below = |mut at: i64| {
            for _ in 0..MAX_DEPTH {
                if at == root {
                    return true;
                }
                match parents.get(&at).copied().flatten() {
                    Some(up) => at = up,
                    None => return false,
                }
            }
            false
        };
        idx.by_id
            .values()
            .filter(|s| below(s.id))
            .map(|s| s.name())
            .collect()
    }

    /// A budget and its ancestors, the budget first.
    pub fn chain(&self, slot: &Arc<Slot>) -> Vec<Arc<Slot>> {
        let mut chain = vec![slot.clone()];
        let mut parent = slot.parent();
        let idx = self.read();
        while let Some(id) = parent {
            let Some(next) = idx.by_id.get(&id) else {
                break;
            };
            if chain.len() == MAX_DEPTH || chain.iter().any(|s| s.id == id) {
                break;
            }
            parent = next.parent();
            chain.push(next.clone());
        }
        chain
    }

    /// Replaces each budget's spend history (its own and its descendants') after budgets moved
    /// in the tree; reservations in flight and alerts raised stay.
    pub fn rebase(&self, mut histories: std::collections::HashMap<i64, History>) {
        for slot in self.slots() {
            let h = histories.remove(&slot.id).unwrap_or_default();
            let mut a = slot.lock();
            a.days = h.days;
            a.last_hour = Default::default();
            for (at, cost) in h.last_hour {
                a.last_hour.add(at, cost);
            }
            a.recount(slot.zone);
        }
    }
}

impl History {
    /// Adds a descendant's spend to this ancestor's.
    pub fn absorb(&mut self, other: &History) {
        for (day, t) in &other.days {
            self.days.entry(*day).or_default().add(*t);
        }
        self.last_hour.extend_from_slice(&other.last_hour);
    }
}

/// Rolls each budget's history up into its ancestors' (`parents`: budget → parent), so each
/// holds its whole subtree's spend, as settling along the chain keeps it.
pub fn roll_up(
    histories: &mut std::collections::HashMap<i64, History>,
    parents: &std::collections::HashMap<i64, i64>,
) {
    let own: Vec<(i64, History)> = histories
        .iter()
        .map(|(id, h)| {
            let spend = History {
                days: h.days.clone(),
                last_hour: h.last_hour.clone(),
                ..History::default()
            };
            (*id, spend)
        })
        .collect();
    for (id, spend) in own {
        let mut at = id;
        for _ in 0..MAX_DEPTH {
            let Some(&parent) = parents.get(&at) else {
                break;
            };
            if parent == id {
                break;
            }
            histories.entry(parent).or_default().absorb(&spend);
            at = parent;
        }
    }
}

/// The chain's accounts, locked in id order (every chain locks in the same order, so two
/// requests never wait on each other's locks), returned in chain order.
fn lock(chain: &[Arc<Slot>]) -> Vec<MutexGuard<'_, Account>> {
    let mut order: Vec<usize> = (0..chain.len()).collect();
    order.sort_by_key(|&i| chain[i].id);
    let mut guards: Vec<Option<MutexGuard<'_, Account>>> = chain.iter().map(|_| None).collect();
    for i in order {
        guards[i] = Some(chain[i].lock());
    }
    guards.into_iter().flatten().collect()
}

/// Holds `cost` and `tokens` on every scope; the room left before it is the chain's least.
fn hold(
    chain: &[Arc<Slot>],
    accounts: &mut [MutexGuard<'_, Account>],
    (cost, tokens): (Money, u64),
    session: Option<&str>,
) -> Reservation {
    let remaining = accounts
        .iter()
        .filter_map(|a| a.room().dollars)
        .reduce(Money::min);
    // Kept only where a scope caps sessions: most requests name a session, few budgets cap
    // them, and the name would be copied for nothing.
    let session = session.filter(|_| {
        accounts
            .iter()
            .any(|a| a.budget.max_session_dollars.is_some())
    });
    for a in accounts.iter_mut() {
        a.hold(cost, tokens);
        if let (Some(s), Some(_)) = (session, a.budget.max_session_dollars) {
            a.sessions.hold(s, cost);
        }
    }
    Reservation {
        slots: chain.to_vec(),
        cost,
        tokens,
        remaining,
        session: session.map(str::to_string),
    }
}

/// How a refusal names a scope: `key 'laptop'` or `'team'`.
pub fn subject(b: &crate::budget::Budget) -> String {
    match b.id < 0 {
        true => format!("key '{}'", b.name),
        false => format!("'{}'", b.name),
    }
}

/// The session's tab on the first scope whose `max_session_dollars` the request would pass.
fn session_over(
    a: &Account,
    session: Option<&str>,
    cost: Money,
) -> Option<(String, super::sessions::Tab)> {
    let (s, cap) = (session?, a.budget.max_session_dollars?);
    a.sessions
        .over(s, cost, cap)
        .then(|| (s.to_string(), a.sessions.tab(s)))
}

/// Admits a request whose worst case is `cost` dollars and `tokens` tokens, atomically on the
/// whole chain: only if, on every scope, spent + reserved + this ≤ its caps (dollars, tokens,
/// hourly rate). The first scope it would pass refuses it, nearest first.
#[expect(
    clippy::result_large_err,
    reason = "refusals are rare and carry the status for the message"
)]
pub fn reserve(
    chain: &[Arc<Slot>],
    cost: Money,
    tokens: u64,
    now: DateTime<Utc>,
    session: Option<&str>,
) -> Result<Reservation, Refusal> {
    let mut accounts = lock(chain);
    for (a, s) in accounts.iter_mut().zip(chain) {
        a.roll(now, s.zone);
    }
    for i in 0..accounts.len() {
        let over_session = session_over(&accounts[i], session, cost);
        let limit = match accounts[i].over(cost, tokens, now) {
            Some(limit) => limit,
            None if over_session.is_some() => Limit::Session,
            None => continue,
        };
        return Err(Refusal {
            status: accounts[i].status(),
            cost,
            tokens,
            limit,
            below: (i > 0).then(|| subject(&accounts[0].budget)),
            session: over_session.filter(|_| limit == Limit::Session),
        });
    }
    for a in accounts.iter_mut() {
        a.note(cost);
    }
    Ok(hold(chain, &mut accounts, (cost, tokens), session))
}

/// Admits the request `fit` makes of the least room the chain's scopes leave, atomically:
/// `fit` returns its worst case (dollars, tokens), which must fit that room, and anything else
/// the caller needs (the clamped `max_tokens`), or None to refuse. `asked` is the full worst
/// case, noted for each scope's typical one.
pub fn reserve_within<T>(
    chain: &[Arc<Slot>],
    (asked, session): (Money, Option<&str>),
    now: DateTime<Utc>,
    fit: impl FnOnce(Room) -> Option<(Money, u64, T)>,
) -> Option<(Reservation, T)> {
    let mut accounts = lock(chain);
    for (a, s) in accounts.iter_mut().zip(chain) {
        a.roll(now, s.zone);
    }
    let with_session = |a: &Account| {
        let mut r = a.room();
        if let (Some(s), Some(cap)) = (session, a.budget.max_session_dollars) {
            let left = a.sessions.room(s, cap);
            r.dollars = Some(r.dollars.map_or(left, |d| d.min(left)));
        }
        r
    };
    let room = accounts.iter().map(|a| with_session(a)).fold(
        Room {
            dollars: None,
            tokens: None,
        },
        |least, r| Room {
            dollars: least
                .dollars
                .into_iter()
                .chain(r.dollars)
                .reduce(Money::min),
            tokens: least.tokens.into_iter().chain(r.tokens).min(),
        },
    );
    let (cost, tokens, extra) = fit(room)?;
    let fits = room.dollars.is_none_or(|d| cost <= d) && room.tokens.is_none_or(|t| tokens <= t);
    if !fits {
        return None;
    }
    for a in accounts.iter_mut() {
        a.note(asked);
    }
    Some((hold(chain, &mut accounts, (cost, tokens), session), extra))
}

/// An admitted request's hold on its budget and every ancestor. Settled or released exactly
/// once: by `settle`, or on drop (a task that panicked or was cancelled frees its reservation).
#[must_use = "a reservation must be settled"]
#[derive(Debug)]
pub struct Reservation {
    slots: Vec<Arc<Slot>>,
    cost: Money,
    tokens: u64,
    remaining: Option<Money>,
    /// Its agent session, for the scopes that cap sessions.
    session: Option<String>,
}

/// The alert thresholds a settlement reached first on one scope, with its status then (when
/// there are any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    pub reached: Vec<u8>,
    pub status: Option<Status>,
}

impl Reservation {
    /// Dollars left before this request (the least of cap − spent − other in-flight on the
    /// chain), None if no scope is capped.
    pub fn remaining(&self) -> Option<Money> {
        self.remaining
    }
    pub fn worst_case(&self) -> Money {
        self.cost
    }
    pub fn tokens(&self) -> u64 {
        self.tokens
    }
    /// The scopes it holds, nearest first.
    pub fn slots(&self) -> &[Arc<Slot>] {
        &self.slots
    }

    /// Lowers the reservation to `cost` and `tokens` where they are smaller (what is now known
    /// to be the most the request can still cost); never raises it.
    pub fn shrink(&mut self, cost: Money, tokens: u64) {
        let (cost, tokens) = (cost.min(self.cost), tokens.min(self.tokens));
        for slot in &self.slots {
            slot.release(
                self.cost - cost,
                self.tokens - tokens,
                self.session.as_deref(),
            );
        }
        self.cost = cost;
        self.tokens = tokens;
    }

    /// Moves the hold onto `chain`, the request's scopes as they are now: a budget moved to
    /// another parent while the request was in flight is charged under its new parents, as
    /// the records it leaves will count it after any rebuild; the scopes it left free their
    /// hold.
    pub fn rechain(&mut self, chain: Vec<Arc<Slot>>) {
        let among = |s: &Arc<Slot>, set: &[Arc<Slot>]| set.iter().any(|h| Arc::ptr_eq(h, s));
        let session = self.session.as_deref();
        for s in self.slots.iter().filter(|s| !among(s, &chain)) {
            s.release(self.cost, self.tokens, session);
        }
        for s in chain.iter().filter(|s| !among(s, &self.slots)) {
            s.hold(self.cost, self.tokens, session);
        }
        self.slots = chain;
    }

    /// Replaces the reservation with the actual cost on every scope, the budget first.
    /// `requests` is 1 for a forwarded request.
    pub fn settle(mut self, cost: Money, tokens: u64, now: DateTime<Utc>) -> Vec<Settled> {
        let actual = Totals {
            dollars: cost,
            tokens,
            requests: 1,
            blocked: 0,
        };
        std::mem::take(&mut self.slots)
            .iter()
            .map(|slot| {
                slot.settle(
                    (self.cost, self.tokens),
                    self.session.as_deref(),
                    actual,
                    now,
                )
            })
            .collect()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        for slot in std::mem::take(&mut self.slots) {
            slot.release(self.cost, self.tokens, self.session.as_deref());
        }
    }
}
