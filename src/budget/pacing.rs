//! `max_subscription_utilization`: the share of each subscription window (5-hour, weekly) a
//! budget's requests may take, so unattended agents stop early and leave the rest for
//! interactive work (docs/subscriptions.md).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ts_rs::TS;

/// A share of a window, in ten-thousandths (0.8 is 8,000): exact, so budgets compare equal.
/// As JSON, a fraction greater than 0 and at most 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Share(u16);

const WHOLE: u16 = 10_000;

impl Share {
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / f64::from(WHOLE)
    }

    /// Percent, for messages (80 for 0.8; 87.5 for 0.875).
    pub fn percent(self) -> String {
        let p = f64::from(self.0) / 100.0;
        format!("{p}")
    }
}

impl Serialize for Share {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.fraction())
    }
}

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Share, D::Error> {
        let v = f64::deserialize(d)?;
        let share = (v * f64::from(WHOLE)).round();
        if !v.is_finite() || share < 1.0 || share > f64::from(WHOLE) {
            return Err(serde::de::Error::custom(format!(
                "a window's share must be a fraction greater than 0 and at most 1 (0.8 for 80 %), not {v}"
            )));
        }
        Ok(Share(share as u16))
    }
}

/// Which windows a budget stops at, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct WindowCaps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional, type = "number")]
    pub five_hour: Option<Share>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional, type = "number")]
    pub seven_day: Option<Share>,
}

impl WindowCaps {
    /// Each capped window: its name in the API and in messages, and its share.
    pub fn windows(&self) -> impl Iterator<Item = (&'static str, &'static str, Share)> {
        [
            ("five_hour", "5-hour", self.five_hour),
            ("seven_day", "weekly", self.seven_day),
        ]
        .into_iter()
        .filter_map(|(key, name, s)| Some((key, name, s?)))
    }
}

/// At least one window: `{}` caps nothing (send null to clear the field).
pub fn check(caps: WindowCaps) -> Result<WindowCaps, super::Invalid> {
    match caps.windows().next() {
        Some(_) => Ok(caps),
        None => Err(super::invalid(
            "max_subscription_utilization",
            "must name at least one window: {\"five_hour\": 0.9, \"seven_day\": 0.8} (or null for none)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_fractions_kept_exactly() {
        let c: WindowCaps =
            serde_json::from_str(r#"{"five_hour": 0.9, "seven_day": 0.8}"#).unwrap();
        assert_eq!(
            (c.five_hour, c.seven_day),
            (Some(Share(9000)), Some(Share(8000)))
        );
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"five_hour":0.9,"seven_day":0.8}"#
        );
        assert_eq!(Share(8750).percent(), "87.5");
        for bad in ["0", "-0.5", "1.5", "\"0.8\"", "1e999"] {
            let text = format!(r#"{{"five_hour": {bad}}}"#);
            assert!(serde_json::from_str::<WindowCaps>(&text).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<WindowCaps>(r#"{"hourly": 0.5}"#).is_err());
        assert!(check(serde_json::from_str("{}").unwrap()).is_err());
        assert_eq!(
            serde_json::from_str::<WindowCaps>(r#"{"seven_day": 1}"#)
                .unwrap()
                .seven_day,
            Some(Share(WHOLE))
        );
    }
}
