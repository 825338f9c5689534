//! How near a budget is to its cap: what the dashboard's bars, the tray's icon and the badge's
//! colour show, decided here once.

use crate::money::Money;
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// From this share of its cap (percent) a budget is `warning`; from 100 % it is `over`.
pub const WARNING_PERCENT: i128 = 80;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum Level {
    Ok,
    Warning,
    /// At its cap, or a request was refused this period.
    Over,
}

impl Level {
    /// The level of `spent` against `cap`, exactly (no floating point at the boundaries).
    pub fn of(spent: Money, cap: Option<Money>, blocked: u64) -> Level {
        if blocked > 0 {
            return Level::Over;
        }
        let Some(cap) = cap.filter(|c| c.is_positive()) else {
            return Level::Ok;
        };
        let (spent, cap) = (i128::from(spent.picos()) * 100, i128::from(cap.picos()));
        if spent >= cap * 100 {
            Level::Over
        } else if spent >= cap * WARNING_PERCENT {
            Level::Warning
        } else {
            Level::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        Money::parse(s).unwrap()
    }

    #[test]
    fn levels_change_exactly_at_80_and_100_percent() {
        let cap = Some(m("10"));
        assert_eq!(Level::of(m("7.999999999999"), cap, 0), Level::Ok);
        assert_eq!(Level::of(m("8"), cap, 0), Level::Warning);
        assert_eq!(Level::of(m("9.999999999999"), cap, 0), Level::Warning);
        assert_eq!(Level::of(m("10"), cap, 0), Level::Over);
        assert_eq!(Level::of(m("0"), cap, 1), Level::Over, "a refusal is over");
        assert_eq!(Level::of(m("1000"), None, 0), Level::Ok, "uncapped");
    }
}
