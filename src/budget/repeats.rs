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

/// What a request is, as far as the guard is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Fine (counted).
    Once,
    /// This one makes `repeats` in the window: raise the alert (it is still forwarded).
    Loop,
    /// Already a loop and the guard blocks: refuse; one more fits in this many milliseconds.
    Refuse { frees_in_ms: i64 },
}

/// The requests of the last window, by fingerprint.
#[derive(Clone, Debug, Default)]
pub struct Repeats {
    seen: VecDeque<(i64, u64)>,
    counts: HashMap<u64, u32>,
}

impl Repeats {
    fn expire(&mut self, now_ms: i64, window_ms: i64) {
        while let Some(&(t, h)) = self.seen.front() {
            if t > now_ms - window_ms {
                break;
            }
            self.seen.pop_front();
            if let Some(c) = self.counts.get_mut(&h) {
                *c -= 1;
                if *c == 0 {
                    self.counts.remove(&h);
                }
            }
        }
    }

    /// Counts a request with fingerprint `h` at `now_ms`, unless it is refused.
    pub fn see(&mut self, h: u64, now_ms: i64, g: &LoopGuard) -> Seen {
        self.expire(now_ms, g.window_ms());
        let n = self.counts.get(&h).copied().unwrap_or(0);
        if n >= g.repeats && g.action == LoopAction::Block {
            let oldest = self
                .seen
                .iter()
                .find(|(_, x)| *x == h)
                .map_or(now_ms, |(t, _)| *t);
            return Seen::Refuse {
                frees_in_ms: (oldest + g.window_ms() - now_ms).max(1),
            };
        }
        self.seen.push_back((now_ms, h));
        *self.counts.entry(h).or_default() += 1;
        if n + 1 == g.repeats {
            Seen::Loop
        } else {
            Seen::Once
        }
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
        // (guard, fingerprint, minute, expected)
        let steps: [(&LoopGuard, u64, i64, Seen); 10] = [
            (&block, 1, 0, Seen::Once),
            (&block, 2, 1, Seen::Once),
            (&block, 1, 2, Seen::Once),
            (&block, 1, 3, Seen::Loop),
            (
                &block,
                1,
                4,
                Seen::Refuse {
                    frees_in_ms: 6 * min,
                },
            ),
            (&block, 2, 5, Seen::Once),
            // The first of the three left the window at minute 10: one more passes, and is the
            // third again.
            (&block, 1, 10, Seen::Loop),
            (&block, 1, 11, Seen::Refuse { frees_in_ms: min }),
            // An alert-only guard never refuses; it counts on, and the count reaching three
            // again (minute 2's left) is a loop again.
            (&alert, 1, 12, Seen::Loop),
            (&alert, 1, 12, Seen::Once),
        ];
        let mut r = Repeats::default();
        for (i, (g, h, minute, want)) in steps.iter().enumerate() {
            assert_eq!(r.see(*h, minute * min, g), *want, "step {i}");
        }
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
