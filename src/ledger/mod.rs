//! The in-memory ledger: per-budget spend by local day, reservations in flight, and the
//! atomic admission decision. The hot path touches only this; the store is written behind it.

use crate::budget::Budget;
use crate::budget::alert;
use crate::budget::period::{self, Window, Zone};
use crate::budget::rate::LastHour;
use crate::budget::repeats::Repeats;
use crate::money::Money;
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

pub mod chain;
pub mod sessions;
mod status;
pub use chain::{Reservation, Settled, reserve, reserve_within};
use status::p95;
pub use status::{RECENT_WORST_CASES, Raised, Room, Status, Totals};

#[derive(Debug)]
struct Account {
    budget: Budget,
    days: BTreeMap<NaiveDate, Totals>,
    window: Window,
    current: Totals,
    reserved: Money,
    reserved_tokens: u64,
    /// Alerts already raised: (period start in ms, threshold, or None for "blocked").
    alerted: Raised,
    /// The full worst cases of its latest requests, admitted or not, newest last.
    worst_cases: VecDeque<Money>,
    last_hour: LastHour,
    repeats: Repeats,
    /// Each session's spend this period, when the budget caps sessions.
    sessions: sessions::Sessions,
}

impl Account {
    /// Marks an alert as raised in the current period; false if it already was.
    fn first(&mut self, what: Option<u8>) -> bool {
        let key = (self.window.start.timestamp_millis(), what);
        if self.alerted.contains(&key) {
            return false;
        }
        self.alerted.push(key);
        true
    }

    /// Moves to the period containing `now`, recomputing its totals from the daily figures.
    fn roll(&mut self, now: DateTime<Utc>, zone: Zone) {
        self.last_hour.expire(now);
        if self.window.contains(now) {
            return;
        }
        self.window = period::window(self.budget.period, self.budget.created_at, now, zone);
        self.sessions.clear();
        // Alerts of past periods can never be raised again: forget them (the store keeps
        // their once-keys).
        let start = self.window.start.timestamp_millis();
        self.alerted.retain(|(s, _)| *s >= start);
        self.recount(zone);
    }

    fn recount(&mut self, zone: Zone) {
        let first = zone.day(self.window.start);
        let mut t = Totals::default();
        for d in self.days.range(first..).map(|(_, d)| d) {
            t.add(*d);
        }
        self.current = t;
    }

    fn status(&self) -> Status {
        Status {
            budget: self.budget.clone(),
            window: self.window,
            period: self.current,
            reserved: self.reserved,
            reserved_tokens: self.reserved_tokens,
            typical_worst_case: p95(&self.worst_cases),
            last_hour: self.last_hour.sum(),
        }
    }

    fn note(&mut self, worst_case: Money) {
        if self.worst_cases.len() == RECENT_WORST_CASES {
            self.worst_cases.pop_front();
        }
        self.worst_cases.push_back(worst_case);
    }

    /// What the velocity cap leaves (after `roll`), if there is one.
    fn hourly_room(&self) -> Option<Money> {
        self.budget
            .max_dollars_per_hour
            .map(|cap| cap - self.last_hour.sum() - self.reserved)
    }

    fn room(&self) -> Room {
        let cap = self
            .budget
            .max_dollars
            .map(|cap| cap - self.current.dollars - self.reserved);
        let dollars = match (cap, self.hourly_room()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Room {
            dollars,
            tokens: self.budget.max_tokens.map(|cap| {
                cap.saturating_sub(self.current.tokens.saturating_add(self.reserved_tokens))
            }),
        }
    }

    fn hold(&mut self, cost: Money, tokens: u64) {
        self.reserved += cost;
        self.reserved_tokens = self.reserved_tokens.saturating_add(tokens);
    }

    /// The limit a request of `cost` and `tokens` would pass here (after `roll`), if any.
    fn over(&mut self, cost: Money, tokens: u64, now: DateTime<Utc>) -> Option<Limit> {
        let over_dollars = self
            .budget
            .max_dollars
            .is_some_and(|cap| self.current.dollars + self.reserved + cost > cap);
        let over_tokens = self.budget.max_tokens.is_some_and(|cap| {
            self.current
                .tokens
                .saturating_add(self.reserved_tokens)
                .saturating_add(tokens)
                > cap
        });
        if over_dollars {
            return Some(Limit::Dollars);
        }
        if over_tokens {
            return Some(Limit::Tokens);
        }
        let room = self.hourly_room()?;
        if cost <= room {
            return None;
        }
        Some(Limit::Hourly {
            frees_in_ms: self.last_hour.frees_in(cost - room, now),
        })
    }
}

/// One budget's live state. Admission and settlement lock only this budget.
#[derive(Debug)]
pub struct Slot {
    id: i64,
    zone: Zone,
    /// A key's scope: its lineage's first key's hash, which names it in a team database.
    key: Option<String>,
    account: Mutex<Account>,
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Dollars,
    Tokens,
    /// The velocity cap; with the milliseconds until enough of the hour has expired, unless
    /// requests in flight hold what is missing.
    Hourly {
        frees_in_ms: Option<i64>,
    },
    /// The budget's `max_session_dollars`, for the session in the refusal.
    Session,
}

/// Why a request was refused: enough to write the 429 message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The scope that refused it: its budget, or an ancestor of it.
    pub status: Status,
    pub cost: Money,
    pub tokens: u64,
    pub limit: Limit,
    /// The request's own budget, when an ancestor refused it.
    pub below: Option<String>,
    /// The session and its tab, when its cap refused it.
    pub session: Option<(String, sessions::Tab)>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Account> {
        // A poisoned lock only means another task panicked mid-update of plain counters;
        // the numbers are still the best we have, so keep serving.
        self.account.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn name(&self) -> String {
        self.lock().budget.name.clone()
    }

    /// Replaces its settings (cap, period…); spend history and reservations stay.
    fn reconfigure(&self, budget: Budget, now: DateTime<Utc>) {
        let mut a = self.lock();
        a.window = period::window(budget.period, budget.created_at, now, self.zone);
        a.budget = budget;
        a.recount(self.zone);
    }

    /// A key's scope: its lineage's first key's hash (the key's own, unless it is a refreshed
    /// sign-in's token).
    pub fn key_hash(&self) -> Option<&str> {
        self.key.as_deref()
    }

    pub fn id(&self) -> i64 {
        self.id
    }

    /// A session's settled spend this period, if the budget caps sessions.
    pub fn session_spent(&self, session: &str) -> Option<Money> {
        let a = self.lock();
        a.budget.max_session_dollars?;
        Some(a.sessions.tab(session).spent)
    }

    /// The budget's parent, if it has one.
    pub fn parent(&self) -> Option<i64> {
        self.lock().budget.parent
    }

    /// The budget's settings alone: what the proxy needs before admission, without the
    /// status's spend figures (whose typical worst case sorts the recent ones).
    pub fn budget(&self) -> Budget {
        self.lock().budget.clone()
    }

    pub fn status(&self, now: DateTime<Utc>) -> Status {
        let mut a = self.lock();
        a.roll(now, self.zone);
        a.status()
    }

    /// Admits a request whose worst case is `cost` dollars and `tokens` tokens against this
    /// budget alone (see [`reserve`] for a budget with ancestors).
    #[expect(
        clippy::result_large_err,
        reason = "refusals are rare and carry the status for the message"
    )]
    pub fn reserve(
        self: &Arc<Self>,
        cost: Money,
        tokens: u64,
        now: DateTime<Utc>,
    ) -> Result<Reservation, Refusal> {
        reserve(std::slice::from_ref(self), cost, tokens, now, None)
    }

    /// Whether the budget's loop guard refuses a request with fingerprint `h` now: the
    /// milliseconds until one more fits. Counts nothing (only forwarded requests count).
    pub fn loop_refusal(&self, h: u64, now: DateTime<Utc>) -> Option<i64> {
        let mut a = self.lock();
        let g = a.budget.loop_guard?;
        a.repeats.refusal(h, now.timestamp_millis(), &g)
    }

    /// Counts a forwarded request with fingerprint `h`; true if it makes a loop.
    pub fn count_repeat(&self, h: u64, now: DateTime<Utc>) -> bool {
        let mut a = self.lock();
        match a.budget.loop_guard {
            Some(g) => a.repeats.count(h, now.timestamp_millis(), &g),
            None => false,
        }
    }

    /// Counts a refused request in its period (after any retry with a better estimate failed
    /// too). Returns the status if this is the period's first block (it raises an alert).
    pub fn count_blocked(&self, worst_case: Money, now: DateTime<Utc>) -> Option<Status> {
        let mut a = self.lock();
        a.roll(now, self.zone);
        a.note(worst_case);
        a.days.entry(self.zone.day(now)).or_default().blocked += 1;
        a.current.blocked += 1;
        a.first(None).then(|| a.status())
    }

    /// Holds a reservation admitted on another scope (its budget moved here mid-flight).
    fn hold(&self, cost: Money, tokens: u64, session: Option<&str>) {
        let mut a = self.lock();
        a.hold(cost, tokens);
        if let (Some(s), Some(_)) = (session, a.budget.max_session_dollars) {
            a.sessions.hold(s, cost);
        }
    }

    /// Frees a reservation that was never settled (its task panicked or was cancelled):
    /// nothing was charged, so no threshold can have been reached and none is marked.
    fn release(&self, cost: Money, tokens: u64, session: Option<&str>) {
        let mut a = self.lock();
        a.reserved = a.reserved - cost;
        a.reserved_tokens = a.reserved_tokens.saturating_sub(tokens);
        if let Some(s) = session {
            a.sessions.release(s, cost);
        }
    }

    fn settle(
        &self,
        (cost, tokens): (Money, u64),
        session: Option<&str>,
        actual: Totals,
        now: DateTime<Utc>,
    ) -> Settled {
        let mut a = self.lock();
        a.reserved = a.reserved - cost;
        a.reserved_tokens = a.reserved_tokens.saturating_sub(tokens);
        if let Some(s) = session {
            a.sessions.settle(s, cost, actual.dollars);
        }
        a.roll(now, self.zone);
        a.days.entry(self.zone.day(now)).or_default().add(actual);
        a.current.add(actual);
        a.last_hour.add(now, actual.dollars);
        // Decided under the lock: of concurrent settlements, exactly one reaches each threshold.
        let start = a.window.start.timestamp_millis();
        let done: Vec<u8> = a
            .alerted
            .iter()
            .filter(|(s, _)| *s == start)
            .filter_map(|(_, t)| *t)
            .collect();
        let reached = alert::reached(
            &a.budget.thresholds,
            a.budget.max_dollars,
            a.current.dollars,
            &done,
        );
        for t in &reached {
            a.first(Some(*t));
        }
        let status = (!reached.is_empty()).then(|| a.status());
        Settled { reached, status }
    }
}

/// What the store knows of a budget's past, to rebuild its live state.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Spend by local day.
    pub days: BTreeMap<NaiveDate, Totals>,
    pub alerted: Raised,
    /// The worst cases of its latest requests, oldest first.
    pub worst_cases: Vec<Money>,
    /// Its priced requests of the last hour: (settled at, cost).
    pub last_hour: Vec<(DateTime<Utc>, Money)>,
    /// Each session's spend this period (for a budget with `max_session_dollars`).
    pub sessions: Vec<(String, Money)>,
}

/// All budgets' live state, by id and by name.
#[derive(Debug)]
pub struct Ledger {
    zone: Zone,
    index: RwLock<Index>,
}

#[derive(Debug, Default)]
struct Index {
    by_id: HashMap<i64, Arc<Slot>>,
    by_name: HashMap<String, Arc<Slot>>,
    /// Keys with their own cap, by key id: scopes below their budget.
    by_key: HashMap<i64, Arc<Slot>>,
}

impl Ledger {
    pub fn new(zone: Zone) -> Ledger {
        Ledger {
            zone,
            index: RwLock::new(Index::default()),
        }
    }

    pub fn zone(&self) -> Zone {
        self.zone
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A budget by name, or by numeric id (names start with a letter, so they never collide).
    pub fn find(&self, key: &str) -> Option<Arc<Slot>> {
        let idx = self.read();
        match key.parse::<i64>() {
            Ok(id) => idx.by_id.get(&id).cloned(),
            Err(_) => idx.by_name.get(key).cloned(),
        }
    }

    /// Adds a budget with its history (from the store at start-up).
    pub fn insert(&self, budget: Budget, history: History, now: DateTime<Utc>) {
        let (id, name) = (budget.id, budget.name.clone());
        let slot = self.slot(budget, history, now, None);
        let mut idx = self.write();
        idx.by_id.insert(id, slot.clone());
        idx.by_name.insert(name, slot);
    }

    /// A budget's live state, from its history.
    fn slot(
        &self,
        budget: Budget,
        history: History,
        now: DateTime<Utc>,
        key: Option<String>,
    ) -> Arc<Slot> {
        let History {
            days,
            alerted,
            worst_cases,
            last_hour: costs,
            sessions,
        } = history;
        let window = period::window(budget.period, budget.created_at, now, self.zone);
        let skip = worst_cases.len().saturating_sub(RECENT_WORST_CASES);
        let mut last_hour = LastHour::default();
        for (at, cost) in costs {
            last_hour.add(at, cost);
        }
        let mut account = Account {
            budget,
            days,
            window,
            current: Totals::default(),
            reserved: Money::ZERO,
            reserved_tokens: 0,
            alerted,
            worst_cases: worst_cases.into_iter().skip(skip).collect(),
            last_hour,
            repeats: Repeats::default(),
            sessions: sessions::Sessions::from_spend(sessions),
        };
        account.recount(self.zone);
        Arc::new(Slot {
            id: account.budget.id,
            zone: self.zone,
            key,
            account: Mutex::new(account),
        })
    }

    /// Replaces a budget's settings (cap, period…); spend history and reservations stay.
    pub fn update(&self, budget: Budget, now: DateTime<Utc>) {
        if let Some(slot) = self.find(&budget.id.to_string()) {
            slot.reconfigure(budget, now);
        }
    }

    /// Sets a budget's sessions' spend this period (read from the records when its
    /// `max_session_dollars` is set); reservations in flight are kept out of it.
    pub fn set_sessions(&self, id: i64, spend: Vec<(String, Money)>) {
        if let Some(slot) = self.find(&id.to_string()) {
            slot.lock().sessions = sessions::Sessions::from_spend(spend);
        }
    }

    pub fn remove(&self, id: i64) {
        let mut idx = self.write();
        if let Some(slot) = idx.by_id.remove(&id) {
            let name = slot.name();
            idx.by_name.remove(&name);
        }
    }

    /// Every budget's live state (not the keys' scopes).
    pub fn slots(&self) -> Vec<Arc<Slot>> {
        self.read().by_id.values().cloned().collect()
    }

    /// Every budget's status, ordered by id.
    pub fn statuses(&self, now: DateTime<Utc>) -> Vec<Status> {
        let mut v: Vec<Status> = self.slots().iter().map(|s| s.status(now)).collect();
        v.sort_by_key(|s| s.budget.id);
        v
    }
}

#[cfg(test)]
mod tests;
