//! A budget's standing against its dollar cap, as Claude Code's gateway protocol carries it:
//! the `anthropic-ratelimit-unified-*` usage-limit headers on each answer to a keyed request,
//! the same headers on a refusal at the cap, and the body of `GET /api/oauth/usage`
//! (docs/claude-code.md). Computed exactly, in picodollars; only the texts are rounded.

use super::Service;
use crate::budget::period::{self, Period};
use crate::error::HttpError;
use crate::ledger::{Slot, Status};
use crate::money::Money;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::sync::Arc;

const PREFIX: &str = "anthropic-ratelimit-";
const STATUS: &str = "anthropic-ratelimit-unified-status";
const RESET: &str = "anthropic-ratelimit-unified-reset";
const CLAIM: &str = "anthropic-ratelimit-unified-representative-claim";
const OVERAGE_STATUS: &str = "anthropic-ratelimit-unified-overage-status";
const UTILIZATION: &str = "anthropic-ratelimit-unified-overage-utilization";
const SURPASSED: &str = "anthropic-ratelimit-unified-overage-surpassed-threshold";
const OVERAGE_RESET: &str = "anthropic-ratelimit-unified-overage-reset";
const OVERAGE_PERIOD: &str = "anthropic-ratelimit-unified-overage-period";
const DISABLED_REASON: &str = "anthropic-ratelimit-unified-overage-disabled-reason";

/// The thresholds past which Claude Code shows its notice (percent, as the header says it).
const THRESHOLDS: [(i128, &str); 2] = [(95, "0.95"), (75, "0.75")];

/// What a budget has spent of its dollar cap in the current period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    pub spent: Money,
    pub cap: Money,
    pub period: Period,
    pub resets_at: Option<DateTime<Utc>>,
}

impl Standing {
    /// Whether more of its cap is spent than of `other`'s (compared exactly, in picodollars).
    pub fn fuller_than(&self, other: &Standing) -> bool {
        i128::from(self.spent.picos()) * i128::from(other.cap.picos())
            > i128::from(other.spent.picos()) * i128::from(self.cap.picos())
    }

    /// The standing of a budget with a dollar cap; None without one.
    pub fn of(s: &Status) -> Option<Standing> {
        let cap = s.budget.max_dollars.filter(|c| c.is_positive())?;
        Some(Standing {
            spent: s.period.dollars,
            cap,
            period: s.budget.period,
            resets_at: s.window.resets_at,
        })
    }

    fn exceeded(&self) -> bool {
        self.spent >= self.cap
    }

    /// Hundredths of the cap used, rounded half up, and kept below 100 while requests are
    /// still allowed (the protocol's utilization, and ×100 the usage endpoint's percent).
    fn hundredths(&self) -> i128 {
        let (spent, cap) = (
            i128::from(self.spent.max(Money::ZERO).picos()),
            i128::from(self.cap.picos()),
        );
        let h = (spent * 200 + cap) / (2 * cap);
        if self.exceeded() { h } else { h.min(99) }
    }

    /// The threshold spend has passed (strictly), as the header writes it.
    fn surpassed(&self) -> Option<&'static str> {
        let (spent, cap) = (i128::from(self.spent.picos()), i128::from(self.cap.picos()));
        THRESHOLDS
            .iter()
            .find(|(t, _)| spent * 100 > cap * t)
            .map(|(_, text)| *text)
    }

    /// The headers on a successful answer: `allowed`, or `allowed_warning` once past 75 %.
    pub fn allowed(&self, headers: &mut HeaderMap) {
        let surpassed = self.surpassed();
        let status = if surpassed.is_some() {
            "allowed_warning"
        } else {
            "allowed"
        };
        put(headers, STATUS, status);
        put(headers, CLAIM, "overage");
        put(headers, OVERAGE_STATUS, status);
        put(headers, UTILIZATION, &fraction(self.hundredths()));
        if let Some(t) = surpassed {
            put(headers, SURPASSED, t);
        }
        self.resets(headers);
    }

    /// The headers on a refusal at the cap. Without the representative claim and the
    /// overage status, so that Claude Code prints the refusal's message as it is.
    pub fn rejected(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            (STATUS, "rejected".to_string()),
            (UTILIZATION, "1".to_string()),
            (SURPASSED, "1".to_string()),
            (DISABLED_REASON, "org_spend_cap_reached".to_string()),
        ];
        if let Some(period) = calendar(self.period) {
            h.push((OVERAGE_PERIOD, period.to_string()));
        }
        if let Some(at) = self.resets_at {
            let secs = at.timestamp().to_string();
            h.push((RESET, secs.clone()));
            h.push((OVERAGE_RESET, secs));
        }
        h
    }

    fn resets(&self, headers: &mut HeaderMap) {
        if let Some(at) = self.resets_at {
            let secs = at.timestamp().to_string();
            put(headers, RESET, &secs);
            put(headers, OVERAGE_RESET, &secs);
        }
    }

    /// The body of `GET /api/oauth/usage` for this cap: dollars in cents, percents whole,
    /// `resets_at` the same second as the `-overage-reset` header.
    pub fn usage(&self) -> Value {
        let percent = i64::try_from(self.hundredths()).unwrap_or(i64::MAX);
        let (spent, cap) = (self.spent.max(Money::ZERO).picos(), self.cap.picos());
        let (spent, cap) = (spent / CENT, (cap + CENT - 1) / CENT);
        let (s, c) = (i128::from(self.spent.picos()), i128::from(self.cap.picos()));
        let severity = if self.exceeded() || s * 100 > c * 95 {
            "critical"
        } else if s * 100 > c * 75 {
            "warning"
        } else {
            "normal"
        };
        let resets_at = self
            .resets_at
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        json!({
            "extra_usage": {
                "is_enabled": true,
                "monthly_limit": cap,
                "used_credits": spent,
                "utilization": percent,
                "currency": "USD",
            },
            "limits": [{
                "kind": "spend",
                "group": self.period.as_str(),
                "percent": percent,
                "resets_at": resets_at,
                "severity": severity,
                "is_active": true,
            }],
        })
    }
}

/// Picodollars in a cent.
const CENT: i64 = 10_000_000_000;

/// The body of `GET /api/oauth/usage` for a budget without a dollar cap: its spend in cents
/// this UTC month, day and week (from Monday).
pub fn uncapped_usage(month: Money, day: Money, week: Money) -> Value {
    let cents = |m: Money| m.max(Money::ZERO).picos() / CENT;
    json!({
        "extra_usage": {
            "is_enabled": true,
            "monthly_limit": null,
            "used_credits": cents(month),
            "utilization": null,
            "currency": "USD",
            "daily": {"limit": null, "used_credits": cents(day), "utilization": null},
            "weekly": {"limit": null, "used_credits": cents(week), "utilization": null},
        },
        "limits": [],
    })
}

impl Service {
    /// `GET /api/oauth/usage`: the standing of the budget the request's virtual key (or
    /// sign-in) is for; without a cap, its spend this month, this week (from Monday) and today
    /// (local days of the configured zone, as all of the product's days).
    /// The standing a credential sees: of the capped scopes on its chain (its own cap, its
    /// budget and the budget's ancestors), the fullest.
    pub fn standing(&self, chain: &[Arc<Slot>], now: DateTime<Utc>) -> Option<Standing> {
        chain
            .iter()
            .filter_map(|s| Standing::of(&self.status_of(s, now)))
            .reduce(|a, b| if b.fuller_than(&a) { b } else { a })
    }

    pub async fn oauth_usage(&self, headers: &HeaderMap) -> Result<Value, HttpError> {
        let (key_id, budget_id) = self.key_of(headers)?;
        let slot = self.slot(&budget_id.to_string())?;
        let now = period::now();
        if let Some(s) = self.standing(&self.chain_of(&slot, Some(key_id)), now) {
            return Ok(s.usage());
        }
        let name = slot.name();
        let rows = self
            .store
            .read(move |c| crate::store::stats::day_rows(c, Some(&name)))
            .await?;
        let zone = self.config.zone;
        let since = |p: Period| {
            zone.day(period::window(p, now, now, zone).start)
                .to_string()
        };
        let spent = |from: String| -> Money {
            rows.iter()
                .filter(|r| r.day >= from)
                .map(|r| r.totals.dollars)
                .sum()
        };
        Ok(uncapped_usage(
            spent(since(Period::Monthly)),
            spent(since(Period::Daily)),
            spent(since(Period::Weekly)),
        ))
    }
}

/// Removes the upstream's own rate-limit headers: they describe the organisation whose key the
/// proxy forwards with, not the user of a virtual key or sign-in.
pub fn strip_upstream(headers: &mut HeaderMap) {
    let theirs: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(PREFIX))
        .cloned()
        .collect();
    for k in theirs {
        headers.remove(k);
    }
}

/// The protocol's period names; a total budget has none (it never resets).
fn calendar(p: Period) -> Option<&'static str> {
    match p {
        Period::Total => None,
        p => Some(p.as_str()),
    }
}

/// Hundredths as the header writes a fraction: `0.82`, `0.5`, `1`.
fn fraction(h: i128) -> String {
    let (whole, part) = (h / 100, h % 100);
    match part {
        0 => whole.to_string(),
        p if p % 10 == 0 => format!("{whole}.{}", p / 10),
        p => format!("{whole}.{p:02}"),
    }
}

fn put(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

#[cfg(test)]
mod tests;
