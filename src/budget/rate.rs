//! Spend over the last hour: the sliding window behind the velocity cap
//! (`max_dollars_per_hour`), the burn rate, and the forecast of when a cap will be reached.
//! Exact money; instants in milliseconds.

use crate::money::Money;
use chrono::{DateTime, Utc};
use std::collections::VecDeque;

/// The window's length.
pub const WINDOW_MS: i64 = 60 * 60 * 1000;

/// The window's resolution: costs settled within one second share an entry.
const BUCKET_MS: i64 = 1000;

/// Settled costs of the last hour by second, oldest first, with their sum. A second's costs
/// stay in the window until an hour after the second *ends*, so the sum is never less than
/// the exact sliding sum (at most one second's worth more): the cap errs on the side of
/// holding, and memory stays at most 3,600 entries a budget whatever the request rate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LastHour {
    /// (second since the epoch, costs settled in it)
    entries: VecDeque<(i64, Money)>,
    sum: Money,
}

/// When a second's costs leave the window.
fn leaves(second: i64) -> i64 {
    (second + 1) * BUCKET_MS + WINDOW_MS
}

impl LastHour {
    /// Forgets what left the window.
    pub fn expire(&mut self, now: DateTime<Utc>) {
        let now = now.timestamp_millis();
        while let Some(&(sec, c)) = self.entries.front() {
            if leaves(sec) > now {
                break;
            }
            self.sum = self.sum - c;
            self.entries.pop_front();
        }
    }

    /// Adds a cost settled at `at` (free requests are not kept).
    pub fn add(&mut self, at: DateTime<Utc>, cost: Money) {
        if !cost.is_positive() {
            return;
        }
        let sec = at.timestamp_millis().div_euclid(BUCKET_MS);
        self.sum += cost;
        // Settlements arrive in order but for a few racing ones: look from the back.
        match self.entries.iter().rposition(|&(s, _)| s <= sec) {
            Some(i) if self.entries[i].0 == sec => self.entries[i].1 += cost,
            Some(i) => self.entries.insert(i + 1, (sec, cost)),
            None => self.entries.push_front((sec, cost)),
        }
    }

    /// What was spent in the window ending at `now`.
    #[cfg(test)]
    fn spent(&mut self, now: DateTime<Utc>) -> Money {
        self.expire(now);
        self.sum
    }

    /// The sum as of the last `expire`.
    pub fn sum(&self) -> Money {
        self.sum
    }

    /// Milliseconds from `now` until enough of the window has expired to free `need`, or None
    /// if all of it expiring would not be enough.
    pub fn frees_in(&mut self, need: Money, now: DateTime<Utc>) -> Option<i64> {
        self.expire(now);
        let mut freed = Money::ZERO;
        for &(sec, c) in &self.entries {
            freed += c;
            if freed >= need {
                return Some((leaves(sec) - now.timestamp_millis()).max(1));
            }
        }
        None
    }

    /// How many entries it holds (at most one a second of the last hour).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// When spend reaches the cap at `per_hour`: `now` plus what is left over the rate, exact to
/// the millisecond (rounded down); now if nothing is left; None without a cap or a rate, or
/// when it would come only after the period resets.
pub fn exhaustion_at(
    left: Option<Money>,
    per_hour: Money,
    now: DateTime<Utc>,
    resets_at: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let left = left?;
    if !left.is_positive() {
        return Some(now);
    }
    if !per_hour.is_positive() {
        return None;
    }
    let ms = i128::from(left.picos()) * i128::from(WINDOW_MS) / i128::from(per_hour.picos());
    let at = now + chrono::Duration::milliseconds(i64::try_from(ms).ok()?);
    match resets_at {
        Some(r) if at >= r => None,
        _ => Some(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::period::{Period, Zone, window};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn m(s: &str) -> Money {
        Money::parse(s).unwrap()
    }

    #[test]
    fn the_window_slides_over_sixty_minutes_by_the_second() {
        let mut h = LastHour::default();
        h.add(t("2026-12-03T10:00:00.250Z"), m("1"));
        h.add(t("2026-12-03T10:30:00Z"), m("2"));
        h.add(t("2026-12-03T10:10:00Z"), m("0.5")); // out of order
        h.add(t("2026-12-03T10:00:00.900Z"), m("0.25")); // the same second as the first
        h.add(t("2026-12-03T10:40:00Z"), Money::ZERO);
        assert_eq!(h.len(), 3);
        let cases = [
            ("2026-12-03T11:00:00.250Z", "3.75"), // exactly an hour after: still held
            ("2026-12-03T11:00:00.999Z", "3.75"),
            ("2026-12-03T11:00:01Z", "2.5"), // an hour after its second ended: gone
            ("2026-12-03T11:10:01.001Z", "2"),
            ("2026-12-03T11:30:01Z", "0"),
        ];
        for (now, want) in cases {
            assert_eq!(h.spent(t(now)), m(want), "at {now}");
        }
    }

    #[test]
    fn a_thousand_requests_a_second_for_an_hour_keep_one_entry_a_second() {
        let mut h = LastHour::default();
        let start = t("2026-12-03T10:00:00Z");
        for ms in (0..3_600_000).step_by(7) {
            h.add(start + chrono::Duration::milliseconds(ms), m("0.000001"));
        }
        assert_eq!(h.len(), 3600);
    }

    #[test]
    fn frees_in_is_when_enough_of_the_window_has_expired() {
        let base = || {
            let mut h = LastHour::default();
            h.add(t("2026-12-03T10:00:00Z"), m("1"));
            h.add(t("2026-12-03T10:20:00Z"), m("2"));
            h
        };
        let now = t("2026-12-03T10:30:00Z");
        // A second's costs leave an hour after it ends: 10:00:00 → 11:00:01.
        let cases: [(&str, Option<i64>); 4] = [
            ("0.5", Some(30 * 60_000 + 1000)),
            ("1", Some(30 * 60_000 + 1000)),
            ("1.01", Some(50 * 60_000 + 1000)), // needs the 10:20 one too
            ("3.01", None),
        ];
        for (need, want) in cases {
            assert_eq!(base().frees_in(m(need), now), want, "need {need}");
        }
    }

    #[test]
    fn the_forecast_is_exact_and_stays_within_the_period_across_a_dst_change() {
        let zone = Zone::parse("Europe/Berlin").unwrap();
        // 29 March 2026: clocks go forward at 02:00, so the day has 23 hours.
        let now = t("2026-03-29T10:00:00Z");
        let day = window(Period::Daily, now, now, zone);
        assert_eq!(day.resets_at, Some(t("2026-03-29T22:00:00Z")));
        let cases: [(&str, Option<&str>, &str, Option<&str>); 7] = [
            // $6 left at $1/h: six hours on, before the reset.
            (
                "daily, within the day",
                Some("6"),
                "1",
                Some("2026-03-29T16:00:00Z"),
            ),
            // $12 at $1/h would be 22:00Z: the reset comes first.
            ("daily, after the reset", Some("12"), "1", None),
            (
                "daily, just before",
                Some("11.999"),
                "1",
                Some("2026-03-29T21:59:56.400Z"),
            ),
            ("uncapped", None, "1", None),
            ("no burn", Some("5"), "0", None),
            (
                "already at the cap",
                Some("0"),
                "1",
                Some("2026-03-29T10:00:00Z"),
            ),
            // A third of a cent per hour: exact, rounded down to the millisecond.
            ("slow", Some("0.01"), "0.003", Some("2026-03-29T13:20:00Z")),
        ];
        for (what, left, rate, want) in cases {
            assert_eq!(
                exhaustion_at(left.map(m), m(rate), now, day.resets_at),
                want.map(t),
                "{what}"
            );
        }
        // A total budget never resets: any time ahead is within its period.
        assert_eq!(
            exhaustion_at(Some(m("240")), m("1"), now, None),
            Some(t("2026-04-08T10:00:00Z"))
        );
    }
}
