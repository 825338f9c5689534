//! Budget periods in a time zone: when the current period started and when it resets.
//! Boundaries are local midnights (the day, the Monday, the 1st), resolved DST-correctly.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use ts_rs::TS;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
    #[default]
    Total,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Total => "total",
        }
    }
    pub fn parse(s: &str) -> Option<Period> {
        Some(match s {
            "daily" => Period::Daily,
            "weekly" => Period::Weekly,
            "monthly" => Period::Monthly,
            "total" => Period::Total,
            _ => return None,
        })
    }
}

/// The time zone periods are computed in: the machine's, or a named IANA zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zone {
    Local,
    Named(chrono_tz::Tz),
}

impl Zone {
    pub fn parse(name: &str) -> Option<Zone> {
        name.parse::<chrono_tz::Tz>().ok().map(Zone::Named)
    }

    fn local_date(self, t: DateTime<Utc>) -> NaiveDate {
        match self {
            Zone::Local => t.with_timezone(&chrono::Local).date_naive(),
            Zone::Named(tz) => t.with_timezone(&tz).date_naive(),
        }
    }

    /// The first instant of a local date: midnight, or the first moment after a DST gap.
    fn start_of(self, d: NaiveDate) -> DateTime<Utc> {
        match self {
            Zone::Local => first_instant(&chrono::Local, d),
            Zone::Named(tz) => first_instant(&tz, d),
        }
    }

    /// The one rendering of an instant the product emits (REST, webhook payloads, Tauri
    /// commands, CSV, messages): RFC 3339 with this zone's offset and exactly milliseconds,
    /// the precision instants are stored at. Two renderings of one instant are one string.
    pub fn render(self, t: DateTime<Utc>) -> String {
        let format = chrono::SecondsFormat::Millis;
        match self {
            Zone::Local => t
                .with_timezone(&chrono::Local)
                .to_rfc3339_opts(format, false),
            Zone::Named(tz) => t.with_timezone(&tz).to_rfc3339_opts(format, false),
        }
    }

    /// The local calendar day of an instant, as `YYYY-MM-DD` (the key of daily roll-ups).
    pub fn day(self, t: DateTime<Utc>) -> NaiveDate {
        self.local_date(t)
    }

    /// The start of a local day as an instant.
    pub fn day_start(self, d: NaiveDate) -> DateTime<Utc> {
        self.start_of(d)
    }
}

/// The current instant at the precision instants are stored and rendered at (milliseconds),
/// so an instant kept in memory equals itself read back from the database.
pub fn now() -> DateTime<Utc> {
    from_millis(Utc::now().timestamp_millis())
}

/// An instant stored as milliseconds since the epoch.
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn first_instant<Z: TimeZone>(tz: &Z, d: NaiveDate) -> DateTime<Utc> {
    let midnight: NaiveDateTime = d.and_hms_opt(0, 0, 0).unwrap_or_default();
    // A gap at midnight (e.g. America/Santiago) moves the start forward; step in 15-minute
    // increments, the finest granularity any zone's offset changes use.
    for quarter in 0..=8 {
        let local = midnight + Duration::minutes(15 * quarter);
        match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(earliest, _) => return earliest.with_timezone(&Utc),
            LocalResult::None => continue,
        }
    }
    midnight.and_utc()
}

/// The current period window: its start and, except for `total`, when it resets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub resets_at: Option<DateTime<Utc>>,
}

impl Window {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        t >= self.start && self.resets_at.is_none_or(|r| t < r)
    }
}

/// The period window that contains `now`. A `total` budget's period starts at its creation.
pub fn window(period: Period, created_at: DateTime<Utc>, now: DateTime<Utc>, zone: Zone) -> Window {
    let today = zone.local_date(now);
    let (first, next) = match period {
        Period::Total => {
            return Window {
                start: created_at,
                resets_at: None,
            };
        }
        Period::Daily => (today, today.succ_opt().unwrap_or(today)),
        Period::Weekly => {
            let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
            (monday, monday + Duration::days(7))
        }
        Period::Monthly => {
            let first = today.with_day(1).unwrap_or(today);
            let next = if first.month() == 12 {
                NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
            };
            (first, next.unwrap_or(first))
        }
    };
    Window {
        start: zone.start_of(first),
        resets_at: Some(zone.start_of(next)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn zone(name: &str) -> Zone {
        Zone::parse(name).unwrap()
    }

    #[test]
    fn boundaries_across_dst_and_month_ends() {
        let created = utc("2020-01-01T00:00:00Z");
        let berlin = zone("Europe/Berlin");
        let ny = zone("America/New_York");
        let cases = [
            // Berlin springs forward 2026-03-29 02:00 → 03:00: that day has 23 hours.
            (
                Period::Daily,
                berlin,
                "2026-03-29T12:00:00+02:00",
                "2026-03-29T00:00:00+01:00",
                "2026-03-30T00:00:00+02:00",
            ),
            // …and falls back 2026-10-25: 25 hours.
            (
                Period::Daily,
                berlin,
                "2026-10-25T23:30:00+01:00",
                "2026-10-25T00:00:00+02:00",
                "2026-10-26T00:00:00+01:00",
            ),
            // The week containing the spring change starts on Monday in winter time, ends in summer time.
            (
                Period::Weekly,
                berlin,
                "2026-03-29T10:00:00+02:00",
                "2026-03-23T00:00:00+01:00",
                "2026-03-30T00:00:00+02:00",
            ),
            // Sunday late evening is still the week that began on Monday.
            (
                Period::Weekly,
                ny,
                "2026-11-08T23:59:59-05:00",
                "2026-11-02T00:00:00-05:00",
                "2026-11-09T00:00:00-05:00",
            ),
            // New York falls back 2026-11-01; November starts in daylight time.
            (
                Period::Monthly,
                ny,
                "2026-11-15T12:00:00-05:00",
                "2026-11-01T00:00:00-04:00",
                "2026-12-01T00:00:00-05:00",
            ),
            // Month ends: February in a leap year, December → January.
            (
                Period::Monthly,
                berlin,
                "2028-02-29T23:59:59+01:00",
                "2028-02-01T00:00:00+01:00",
                "2028-03-01T00:00:00+01:00",
            ),
            (
                Period::Monthly,
                berlin,
                "2026-12-31T23:00:00+01:00",
                "2026-12-01T00:00:00+01:00",
                "2027-01-01T00:00:00+01:00",
            ),
            // One second past midnight on the 1st is the new month.
            (
                Period::Monthly,
                berlin,
                "2027-01-01T00:00:01+01:00",
                "2027-01-01T00:00:00+01:00",
                "2027-02-01T00:00:00+01:00",
            ),
            // Santiago skips midnight on its spring change (2026-09-06): the day starts at 01:00.
            (
                Period::Daily,
                zone("America/Santiago"),
                "2026-09-06T12:00:00-03:00",
                "2026-09-06T01:00:00-03:00",
                "2026-09-07T00:00:00-03:00",
            ),
        ];
        for (period, z, now, start, reset) in cases {
            let w = window(period, created, utc(now), z);
            assert_eq!(w.start, utc(start), "{period:?} {now} start");
            assert_eq!(w.resets_at, Some(utc(reset)), "{period:?} {now} reset");
            assert!(w.contains(utc(now)));
        }
    }

    #[test]
    fn total_starts_at_creation_and_never_resets() {
        let created = utc("2026-05-05T10:00:00Z");
        let w = window(
            Period::Total,
            created,
            utc("2030-01-01T00:00:00Z"),
            Zone::Local,
        );
        assert_eq!(
            w,
            Window {
                start: created,
                resets_at: None
            }
        );
    }

    #[test]
    fn every_instant_renders_with_milliseconds_and_the_zones_offset() {
        let cases = [
            (
                "Europe/Berlin",
                "2026-07-01T10:00:00Z",
                "2026-07-01T12:00:00.000+02:00",
            ),
            (
                "Europe/Berlin",
                "2026-01-01T10:00:00.5Z",
                "2026-01-01T11:00:00.500+01:00",
            ),
            (
                "UTC",
                "2026-12-02T21:25:24.572360563Z",
                "2026-12-02T21:25:24.572+00:00",
            ),
            (
                "America/New_York",
                "2026-03-08T07:00:00.001Z",
                "2026-03-08T03:00:00.001-04:00",
            ),
        ];
        for (name, t, want) in cases {
            assert_eq!(zone(name).render(utc(t)), want, "{t} in {name}");
        }
    }

    #[test]
    fn now_is_whole_milliseconds_and_survives_a_round_trip_through_storage() {
        let t = now();
        assert_eq!(t.timestamp_subsec_nanos() % 1_000_000, 0);
        assert_eq!(from_millis(t.timestamp_millis()), t);
    }
}
