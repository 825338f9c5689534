//! Alerts: which thresholds a settlement reached (pure), the alert model and its texts.
//! Delivery (webhooks) is the service's (`service::webhook`).

use crate::budget::period::{Period, Window};
use crate::budget::repeats::{LoopAction, LoopGuard};
use crate::money::Money;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ts_rs::TS;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum AlertKind {
    Threshold,
    Blocked,
    UnpricedModel,
    /// The upstream reported a usage no response can have; the request was charged its
    /// reservation instead.
    MalformedUsage,
    /// The same request sent `loop_guard.repeats` times within its minutes.
    Loop,
    Test,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Threshold => "threshold",
            AlertKind::Blocked => "blocked",
            AlertKind::UnpricedModel => "unpriced_model",
            AlertKind::MalformedUsage => "malformed_usage",
            AlertKind::Loop => "loop",
            AlertKind::Test => "test",
        }
    }
    pub fn parse(s: &str) -> AlertKind {
        match s {
            "threshold" => AlertKind::Threshold,
            "blocked" => AlertKind::Blocked,
            "unpriced_model" => AlertKind::UnpricedModel,
            "malformed_usage" => AlertKind::MalformedUsage,
            "loop" => AlertKind::Loop,
            _ => AlertKind::Test,
        }
    }
}

/// An alert about to be stored (in the same transaction as the usage record that raised it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAlert {
    pub kind: AlertKind,
    pub created_at: DateTime<Utc>,
    pub budget_id: i64,
    pub budget: String,
    pub period: Period,
    pub window: Window,
    pub threshold: Option<u8>,
    pub model: Option<String>,
    pub spent: Money,
    pub cap: Option<Money>,
    pub webhook_url: Option<String>,
    /// For `loop` alerts: the guard that saw it.
    pub loop_guard: Option<LoopGuard>,
}

impl NewAlert {
    /// What makes this alert unique (`None` for test alerts, which may repeat).
    pub fn once_key(&self) -> Option<String> {
        let start = self.window.start.timestamp_millis();
        match self.kind {
            AlertKind::Threshold => Some(format!(
                "threshold:{}:{start}:{}",
                self.budget_id,
                self.threshold.unwrap_or(0)
            )),
            AlertKind::Blocked => Some(format!("blocked:{}:{start}", self.budget_id)),
            AlertKind::UnpricedModel => {
                Some(format!("unpriced:{}", self.model.as_deref().unwrap_or("")))
            }
            // Once per budget and period: a broken upstream repeats itself; its records say each time.
            AlertKind::MalformedUsage => Some(format!("malformed:{}:{start}", self.budget_id)),
            // Each loop is its own alert: a loop that stops and starts again is a new one.
            AlertKind::Loop => Some(format!(
                "loop:{}:{}",
                self.budget_id,
                self.created_at.timestamp_millis()
            )),
            AlertKind::Test => None,
        }
    }

    pub fn message(&self) -> String {
        let cap = self
            .cap
            .map(Money::display_cents)
            .unwrap_or_else(|| "no cap".into());
        let period = self.period.as_str();
        match self.kind {
            AlertKind::Threshold => format!(
                "Budget '{}' reached {}% of its {period} cap: {} of {cap}",
                self.budget,
                self.threshold.unwrap_or(0),
                self.spent.display_cents()
            ),
            AlertKind::Blocked => format!(
                "Budget '{}' blocked a request: it would have exceeded the {period} cap ({} of {cap} spent)",
                self.budget,
                self.spent.display_cents()
            ),
            AlertKind::UnpricedModel => format!(
                "Model '{}' has no price; it is charged at the dearest known rates. Add its price in the pricing table.",
                self.model.as_deref().unwrap_or("")
            ),
            AlertKind::MalformedUsage => format!(
                "Budget '{}': the upstream reported a usage no response to '{}' can have (a broken or hostile upstream?); the request was charged its reserved worst case and its record is marked estimated",
                self.budget,
                self.model.as_deref().unwrap_or("a model")
            ),
            AlertKind::Loop => {
                let (repeats, minutes, blocks) = self
                    .loop_guard
                    .map(|g| (g.repeats, g.minutes, g.action == LoopAction::Block))
                    .unwrap_or((0, 0, false));
                let then = if blocks {
                    "further repeats are refused"
                } else {
                    "it is still forwarded"
                };
                format!(
                    "Budget '{}': the same request to {} was sent {repeats} times within {minutes} minutes (a runaway loop?); {then}",
                    self.budget,
                    self.model.as_deref().unwrap_or("a model"),
                )
            }
            AlertKind::Test => format!("Test alert for budget '{}' from agent-budget", self.budget),
        }
    }
}

/// Thresholds (percent of `cap`) that `spent` has reached and that are not yet in `alerted`,
/// in ascending order. Reaching several at once raises one alert each.
pub fn reached(thresholds: &[u8], cap: Option<Money>, spent: Money, alerted: &[u8]) -> Vec<u8> {
    let Some(cap) = cap.filter(|c| c.is_positive()) else {
        return Vec::new();
    };
    thresholds
        .iter()
        .copied()
        .filter(|t| !alerted.contains(t))
        // spent ≥ t% of cap, in exact integers: spent × 100 ≥ cap × t.
        .filter(|t| i128::from(spent.picos()) * 100 >= i128::from(cap.picos()) * i128::from(*t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        Money::parse(s).unwrap()
    }

    #[test]
    fn thresholds_are_reached_exactly_at_their_percentage() {
        let t = [50, 80, 100];
        let cap = Some(m("10"));
        assert_eq!(reached(&t, cap, m("4.999999999999"), &[]), Vec::<u8>::new());
        assert_eq!(reached(&t, cap, m("5"), &[]), vec![50]);
        assert_eq!(
            reached(&t, cap, m("10"), &[]),
            vec![50, 80, 100],
            "one response can cross several"
        );
        assert_eq!(reached(&t, cap, m("10"), &[50, 80]), vec![100]);
        assert_eq!(
            reached(&t, None, m("1000"), &[]),
            Vec::<u8>::new(),
            "uncapped budgets never alert"
        );
        assert_eq!(reached(&[33], Some(m("3")), m("0.99"), &[]), vec![33]);
    }
}
