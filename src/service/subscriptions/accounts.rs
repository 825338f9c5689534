//! Each credential's last state: its windows and rate limits, the readings that pace its
//! windows, and the alerts raised on them, by account (a fingerprint).

use crate::subscription::{self, RateLimits, Window, Windows};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

/// The most credentials remembered: the least recently seen is forgotten past this.
const MAX_ACCOUNTS: usize = 64;
/// The readings kept of a window instance for its pace, one a minute at most.
const MAX_READINGS: usize = 60;
const READING_GAP_SECS: i64 = 60;

/// Resets this close are one window instance: an upstream that writes the same reset a few
/// seconds apart must not start a new instance (and raise its alerts again) each time.
const SAME_RESET_SECS: i64 = 300;

fn same_instance(a: Option<i64>, b: Option<i64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= SAME_RESET_SECS,
        (a, b) => a == b,
    }
}

/// The windows alerts and pacing follow: (key, name in messages).
const PACED: [(&str, &str); 2] = [("five_hour", "5-hour"), ("seven_day", "weekly")];

/// One credential's last state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Seen {
    #[serde(default)]
    pub(super) windows: Option<Windows>,
    #[serde(default)]
    pub(super) limits: Option<RateLimits>,
    /// Epoch seconds.
    pub(super) seen_at: i64,
    /// The readings of each paced window's current instance.
    #[serde(default)]
    readings: BTreeMap<String, Instance>,
    /// The alerts raised: (window, its reset in epoch seconds, percent).
    #[serde(default)]
    raised: Vec<(String, i64, u8)>,
}

/// One instance of a window (until it resets): its readings (epoch seconds, utilization).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Instance {
    resets_at: Option<i64>,
    readings: Vec<(i64, f64)>,
}

impl Seen {
    pub(super) fn window(&self, key: &str) -> Option<&Window> {
        let w = self.windows.as_ref()?;
        match key {
            "five_hour" => w.five_hour.as_ref(),
            _ => w.seven_day.as_ref(),
        }
    }

    /// Notes a reading of each paced window; returns the thresholds each newly reached.
    fn read(&mut self, now: i64, thresholds: &[u8]) -> Vec<Crossed> {
        let mut crossed = Vec::new();
        for (key, name) in PACED {
            let Some((u, resets_at)) = self
                .window(key)
                .and_then(|w| Some((w.utilization?, w.resets_at)))
            else {
                continue;
            };
            let inst = self.readings.entry(key.to_string()).or_default();
            if !same_instance(inst.resets_at, resets_at) {
                *inst = Instance {
                    resets_at,
                    readings: Vec::new(),
                };
            }
            if inst
                .readings
                .last()
                .is_none_or(|l| now - l.0 >= READING_GAP_SECS)
            {
                inst.readings.push((now, u));
                if inst.readings.len() > MAX_READINGS {
                    inst.readings.remove(0);
                }
            }
            let instance = resets_at.unwrap_or(0);
            let raised: Vec<u8> = (self.raised.iter())
                .filter(|(w, r, _)| w == key && same_instance(Some(*r), Some(instance)))
                .map(|(_, _, t)| *t)
                .collect();
            for t in subscription::reached(u, thresholds, &raised) {
                self.raised.push((key.to_string(), instance, t));
                crossed.push(Crossed {
                    window: name,
                    threshold: t,
                    utilization: u,
                    resets_at,
                });
            }
        }
        // Alerts of instances that have reset are not needed to keep them once.
        self.raised.retain(|(_, r, _)| *r == 0 || *r > now);
        crossed
    }

    /// A window's pace: from its oldest reading kept to the latest.
    pub(super) fn pace(&self, key: &str, w: &Window) -> Option<subscription::Pace> {
        let inst = self.readings.get(key)?;
        let (first, kept) = (*inst.readings.first()?, *inst.readings.last()?);
        let latest = match w.utilization {
            Some(u) if kept.0 < self.seen_at => (self.seen_at, u),
            _ => kept,
        };
        subscription::pace(&[first, latest], w.resets_at)
    }

    /// Keeps what `older` (this credential's earlier state here) knew that this newer state
    /// lacks: the alerts raised, and the readings of the same window instances.
    fn keep_from(&mut self, older: &Seen) {
        for r in &older.raised {
            if !self.raised.contains(r) {
                self.raised.push(r.clone());
            }
        }
        for (key, old) in &older.readings {
            let Some(inst) = self.readings.get_mut(key) else {
                continue;
            };
            if same_instance(inst.resets_at, old.resets_at) {
                inst.readings.extend(old.readings.iter().copied());
                inst.readings.sort_by_key(|r| r.0);
                inst.readings.dedup_by_key(|r| r.0);
                let extra = inst.readings.len().saturating_sub(MAX_READINGS);
                inst.readings.drain(..extra);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A window's threshold, newly reached.
#[derive(Clone, Debug, PartialEq)]
pub struct Crossed {
    pub window: &'static str,
    pub threshold: u8,
    pub utilization: f64,
    pub resets_at: Option<i64>,
}

/// Every credential's last state, by account.
#[derive(Debug, Default)]
pub struct Accounts {
    seen: Mutex<HashMap<String, Seen>>,
    /// Changed since the last save; forgotten (to delete).
    dirty: Mutex<(HashSet<String>, HashSet<String>)>,
    /// Seen here since they were last shared with the team.
    unshared: Mutex<HashSet<String>>,
}

impl Accounts {
    /// From the saved states (a state that does not parse is dropped).
    pub fn load(rows: Vec<(String, String)>) -> Accounts {
        let seen = rows
            .into_iter()
            .take(MAX_ACCOUNTS)
            .filter_map(|(a, state)| Some((a, serde_json::from_str(&state).ok()?)))
            .collect();
        Accounts {
            seen: Mutex::new(seen),
            dirty: Mutex::default(),
            unshared: Mutex::default(),
        }
    }

    pub(super) fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        lock(&self.seen)
    }

    fn dirty(&self) -> std::sync::MutexGuard<'_, (HashSet<String>, HashSet<String>)> {
        lock(&self.dirty)
    }

    /// Notes what a response said of a credential; returns the thresholds it crossed and
    /// whether anything shown changed.
    pub(super) fn observe(
        &self,
        account: &str,
        (windows, limits): (Option<Windows>, Option<RateLimits>),
        now: i64,
        thresholds: &[u8],
    ) -> (Vec<Crossed>, bool) {
        let mut all = self.seen();
        self.make_room(&mut all, account);
        let seen = match all.get_mut(account) {
            Some(seen) => seen,
            None => all.entry(account.to_string()).or_default(),
        };
        let changed = (windows.is_some() && windows != seen.windows)
            || (limits.is_some() && limits != seen.limits);
        // The same answer within a second changes nothing to keep.
        if !changed && seen.seen_at == now {
            return (Vec::new(), false);
        }
        seen.seen_at = now;
        let mut crossed = Vec::new();
        if windows.is_some() {
            seen.windows = windows;
            crossed = seen.read(now, thresholds);
        }
        if limits.is_some() {
            seen.limits = limits;
        }
        self.mark(account);
        let mut unshared = lock(&self.unshared);
        if !unshared.contains(account) {
            unshared.insert(account.to_string());
        }
        (crossed, changed)
    }

    /// Forgets the least recently seen credential if `account` is new and there is no room.
    fn make_room(&self, all: &mut HashMap<String, Seen>, account: &str) {
        if all.contains_key(account) || all.len() < MAX_ACCOUNTS {
            return;
        }
        let oldest = all
            .iter()
            .min_by_key(|(_, s)| s.seen_at)
            .map(|(a, _)| a.clone());
        if let Some(a) = oldest {
            all.remove(&a);
            lock(&self.unshared).remove(&a);
            self.dirty().1.insert(a);
        }
    }

    /// Notes an account's state as changed, to save.
    fn mark(&self, account: &str) {
        let mut dirty = self.dirty();
        if !dirty.0.contains(account) {
            dirty.0.insert(account.to_string());
        }
        dirty.1.remove(account);
    }

    /// Takes another proxy's state of a credential when it is newer than this one's, keeping
    /// what this one knew of the same window instances (alerts raised, readings); true if
    /// it was taken. A state that does not parse changes nothing.
    pub(super) fn merge(&self, account: &str, state: &str) -> bool {
        let Ok(mut theirs) = serde_json::from_str::<Seen>(state) else {
            return false;
        };
        let mut all = self.seen();
        match all.get(account) {
            Some(mine) if mine.seen_at >= theirs.seen_at => return false,
            Some(mine) => theirs.keep_from(mine),
            None => self.make_room(&mut all, account),
        }
        all.insert(account.to_string(), theirs);
        self.mark(account);
        true
    }

    /// The states seen here since they were last taken, to share.
    pub(super) fn take_unshared(&self) -> Vec<(String, String, i64)> {
        let accounts = std::mem::take(&mut *lock(&self.unshared));
        let all = self.seen();
        accounts
            .into_iter()
            .filter_map(|a| {
                let s = all.get(&a)?;
                Some((a, serde_json::to_string(s).ok()?, s.seen_at))
            })
            .collect()
    }

    /// States not shared after all (the team did not answer): shared at the next try.
    pub(super) fn put_back_unshared(&self, states: &[(String, String, i64)]) {
        lock(&self.unshared).extend(states.iter().map(|(a, _, _)| a.clone()));
    }

    /// What changed since the last call: states to save, accounts to forget.
    pub(super) fn take_dirty(&self) -> (Vec<(String, String, i64)>, Vec<String>) {
        let (changed, gone) = std::mem::take(&mut *self.dirty());
        let all = self.seen();
        let states = changed
            .into_iter()
            .filter_map(|a| {
                let s = all.get(&a)?;
                Some((a, serde_json::to_string(s).ok()?, s.seen_at))
            })
            .collect();
        (states, gone.into_iter().collect())
    }

    pub(super) fn put_back(&self, states: &[(String, String, i64)], gone: Vec<String>) {
        let mut dirty = self.dirty();
        dirty.0.extend(states.iter().map(|(a, _, _)| a.clone()));
        dirty.1.extend(gone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn seen(u: f64, reset: i64) -> Seen {
        Seen {
            windows: Some(Windows {
                five_hour: Some(Window {
                    utilization: Some(u),
                    resets_at: Some(reset),
                    status: None,
                }),
                ..Windows::default()
            }),
            ..Seen::default()
        }
    }

    /// Reads `u` with `reset` into `s` at `now`; the thresholds it crossed.
    fn read(s: &mut Seen, u: f64, reset: i64, now: i64) -> Vec<u8> {
        s.windows = seen(u, reset).windows;
        s.seen_at = now;
        s.read(now, &[80, 95]).iter().map(|c| c.threshold).collect()
    }

    #[test]
    fn a_window_alerts_once_per_instance_even_when_its_reset_jitters() {
        let mut s = Seen::default();
        assert_eq!(read(&mut s, 0.81, 10_000, 100), vec![80]);
        // The same window, its reset written a few seconds off: nothing new.
        assert_eq!(read(&mut s, 0.85, 10_004, 200), Vec::<u8>::new());
        assert_eq!(read(&mut s, 0.96, 9_998, 300), vec![95]);
        // The next window: alerts again.
        assert_eq!(read(&mut s, 0.9, 28_000, 10_100), vec![80]);
    }

    #[test]
    fn the_pace_comes_from_one_instances_readings() {
        let mut s = Seen::default();
        read(&mut s, 0.40, 20_000, 0);
        read(&mut s, 0.45, 20_002, 900);
        read(&mut s, 0.50, 20_001, 1_800);
        let w = s.window("five_hour").cloned().unwrap();
        let p = s.pace("five_hour", &w).unwrap();
        assert!((p.per_hour - 0.2).abs() < 1e-9, "{p:?}");
        assert_eq!(p.fills_at, Some(1_800 + 9_000));
        // A new instance starts its readings afresh: no pace from one reading.
        read(&mut s, 0.05, 40_000, 20_100);
        let w = s.window("five_hour").cloned().unwrap();
        assert_eq!(s.pace("five_hour", &w), None);
    }

    /// `s` as another proxy shares it.
    fn shared(s: &Seen) -> String {
        serde_json::to_string(s).unwrap()
    }

    #[test]
    fn a_newer_state_from_the_team_is_taken_with_what_was_known_here() {
        let accounts = Accounts::default();
        let mut mine = Seen::default();
        read(&mut mine, 0.81, 10_000, 100);
        accounts.seen().insert("a".into(), mine.clone());
        // Another proxy's later answer: taken; the 80 % raised here stays raised.
        let mut theirs = Seen::default();
        read(&mut theirs, 0.5, 10_003, 90);
        theirs.raised.clear();
        theirs.windows = seen(0.86, 10_003).windows;
        theirs.seen_at = 200;
        assert!(accounts.merge("a", &shared(&theirs)));
        let mut now = accounts.seen()["a"].clone();
        assert_eq!(now.seen_at, 200);
        assert_eq!(now.window("five_hour").unwrap().utilization, Some(0.86));
        let kept: Vec<i64> = now.readings["five_hour"]
            .readings
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(kept, vec![90, 100], "the readings of both, in order");
        assert_eq!(read(&mut now, 0.87, 10_000, 300), Vec::<u8>::new());
        // An older or equal one, or one that does not parse, changes nothing.
        assert!(!accounts.merge("a", &shared(&theirs)));
        assert!(!accounts.merge("a", "{not json"));
        assert_eq!(accounts.seen()["a"].seen_at, 200);
        // Taken states are saved here, but not shared back.
        assert!(accounts.take_unshared().is_empty());
        assert_eq!(accounts.take_dirty().0.len(), 1);
    }

    #[test]
    fn a_state_seen_here_is_shared_once_and_again_if_the_team_did_not_take_it() {
        let accounts = Accounts::default();
        let windows = seen(0.4, 10_000).windows;
        accounts.observe("a", (windows, None), 100, &[80]);
        let states = accounts.take_unshared();
        assert_eq!(states.len(), 1);
        assert!(accounts.take_unshared().is_empty());
        accounts.put_back_unshared(&states);
        assert_eq!(accounts.take_unshared().len(), 1);
    }
}
