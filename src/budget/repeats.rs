//! Runaway loops: the same request (model + messages) sent again and again. A budget's
//! `loop_guard` says how many identical requests within how many minutes make a loop, and
//! whether a loop only raises an alert or also refuses further repeats.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use ts_rs::TS;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum LoopAction {
    /// Raise a `loop` alert; keep forwarding.
    #[default]
    Alert,
    /// Raise the alert and refuse further repeats until the window lets one through.
    Block,
}

/// A budget's `loop_guard`: `repeats` identical requests within `minutes` make a loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct LoopGuard {
    #[serde(default = "default_repeats")]
    pub repeats: u32,
    #[serde(default = "default_minutes")]
    pub minutes: u32,
    #[serde(default)]
    pub action: LoopAction,
}

fn default_repeats() -> u32 {
    5
}
fn default_minutes() -> u32 {
    10
}

impl LoopGuard {
    /// The rule, if it is broken.
    pub fn invalid(&self) -> Option<&'static str> {
        if !(2..=1000).contains(&self.repeats) {
            return Some("'repeats' must be a whole number from 2 to 1000 (default 5)");
        }
        if !(1..=1440).contains(&self.minutes) {
            return Some("'minutes' must be a whole number from 1 to 1440 (default 10)");
        }
        None
    }
    fn window_ms(&self) -> i64 {
        i64::from(self.minutes) * 60_000
    }
}

/// The most requests the guard remembers per budget: past it the oldest are forgotten early,
/// so memory stays bounded whatever the request rate (at 100,000 a window, a loop still needs
/// its repeats among the latest 100,000 requests).
const MAX_TRACKED: usize = 100_000;

/// The forwarded requests of the last window, by fingerprint.
#[derive(Clone, Debug, Default)]
pub struct Repeats {
    /// Every counted request, oldest first (for expiry).
    order: VecDeque<(i64, u64)>,
    /// Each fingerprint's latest counted times in the window, at most `repeats` of them: all
    /// a decision needs, so no decision scans the window.
    times: HashMap<u64, VecDeque<i64>>,
}

impl Repeats {
    fn expire(&mut self, now_ms: i64, window_ms: i64) {
        while let Some(&(t, h)) = self.order.front() {
            if t > now_ms.saturating_sub(window_ms) && self.order.len() <= MAX_TRACKED {
                break;
            }
            self.order.pop_front();
            if let Some(times) = self.times.get_mut(&h) {
                if times.front() == Some(&t) {
                    times.pop_front();
                }
                if times.is_empty() {
                    self.times.remove(&h);
                }
            }
        }
    }

    /// Whether a blocking guard refuses a request with fingerprint `h` now (`repeats` of it
    /// are in the window already): the milliseconds until one more fits. Counts nothing.
    pub fn refusal(&mut self, h: u64, now_ms: i64, g: &LoopGuard) -> Option<i64> {
        self.expire(now_ms, g.window_ms());
        if g.action != LoopAction::Block {
            return None;
        }
        let times = self.times.get(&h)?;
        let oldest = *times.front()?;
        (times.len() >= g.repeats as usize).then(|| (oldest + g.window_ms() - now_ms).max(1))
    }

    /// Counts a forwarded request; true if it is the `repeats`-th in the window (a loop).
    pub fn count(&mut self, h: u64, now_ms: i64, g: &LoopGuard) -> bool {
        self.expire(now_ms, g.window_ms());
        self.order.push_back((now_ms, h));
        let times = self.times.entry(h).or_default();
        times.push_back(now_ms);
        let n = times.len();
        if n > g.repeats as usize {
            times.pop_front();
        }
        n == g.repeats as usize
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.order.len()
    }
}

/// The fingerprint of a request: its model and messages, nothing else (metadata, sampling
/// parameters and `max_tokens` may change between repeats of one loop).
pub fn fingerprint(model: &str, messages: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    model.hash(&mut h);
    messages.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_is_n_identical_requests_within_the_window() {
        let alert = LoopGuard {
            repeats: 3,
            minutes: 10,
            action: LoopAction::Alert,
        };
        let block = LoopGuard {
            action: LoopAction::Block,
            ..alert
        };
        let min = 60_000;
        // (guard, fingerprint, minute, refused with ms to wait, or counted: a loop?)
        let steps: [(&LoopGuard, u64, i64, Result<bool, i64>); 10] = [
            (&block, 1, 0, Ok(false)),
            (&block, 2, 1, Ok(false)),
            (&block, 1, 2, Ok(false)),
            (&block, 1, 3, Ok(true)),
            (&block, 1, 4, Err(6 * min)),
            (&block, 2, 5, Ok(false)),
            // The first of the three left the window at minute 10: one more passes, and is the
            // third again.
            (&block, 1, 10, Ok(true)),
            (&block, 1, 11, Err(min)),
            // An alert-only guard never refuses; it counts on, and the count reaching three
            // again (minute 2's left) is a loop again.
            (&alert, 1, 12, Ok(true)),
            (&alert, 1, 12, Ok(false)),
        ];
        let mut r = Repeats::default();
        for (i, (g, h, minute, want)) in steps.iter().enumerate() {
            let now = minute * min;
            let got = match r.refusal(*h, now, g) {
                Some(ms) => Err(ms),
                None => Ok(r.count(*h, now, g)),
            };
            assert_eq!(got, *want, "step {i}");
        }
    }

    #[test]
    fn memory_stays_bounded_whatever_the_rate() {
        let g = LoopGuard {
            repeats: 3,
            minutes: 1440,
            action: LoopAction::Block,
        };
        let mut r = Repeats::default();
        for i in 0..(MAX_TRACKED as u64 + 5000) {
            assert!(!r.count(i, 1, &g));
        }
        assert!(r.tracked() <= MAX_TRACKED + 1);
        assert!(r.times.len() <= MAX_TRACKED + 1);
        // A loop of one request among them is still seen.
        for _ in 0..2 {
            r.count(7, 2, &g);
        }
        assert!(r.count(7, 3, &g));
        assert_eq!(r.refusal(7, 4, &g), Some(1440 * 60_000 - 2));
    }

    #[test]
    fn the_fingerprint_is_model_and_messages_only() {
        assert_eq!(fingerprint("m", b"[1]"), fingerprint("m", b"[1]"));
        assert_ne!(fingerprint("m", b"[1]"), fingerprint("n", b"[1]"));
        assert_ne!(fingerprint("m", b"[1]"), fingerprint("m", b"[2]"));
    }

    #[test]
    fn the_guard_has_defaults_and_bounds() {
        let g: LoopGuard = serde_json::from_str("{}").unwrap();
        assert_eq!((g.repeats, g.minutes, g.action), (5, 10, LoopAction::Alert));
        assert!(
            serde_json::from_str::<LoopGuard>(r#"{"repeats":1}"#)
                .unwrap()
                .invalid()
                .is_some()
        );
        assert!(
            serde_json::from_str::<LoopGuard>(r#"{"minutes":0}"#)
                .unwrap()
                .invalid()
                .is_some()
        );
        assert!(serde_json::from_str::<LoopGuard>(r#"{"action":"stop"}"#).is_err());
    }
}
