//! What the upstream's answers say about the credential that sent them: a subscription's
//! 5-hour and weekly windows (`anthropic-ratelimit-unified-*`), or an API key's rate limits
//! (`anthropic-ratelimit-{requests,tokens,…}-*`), read from each response's headers; and
//! where a window is heading at its recent pace. Every value is bounded: a header that is
//! missing or garbage is left out, never guessed (docs/subscriptions.md).

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ts_rs::TS;

#[cfg(test)]
mod tests;

/// The most utilization believed: Anthropic has sent values above 1 on a refusal; more than
/// this is garbage.
const MAX_UTILIZATION: f64 = 100.0;

/// One window of a subscription: how much of it is used (a fraction; above 1 past the
/// limit), when it resets (epoch seconds) and its status (`allowed`, `allowed_warning`,
/// `rejected`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub utilization: Option<f64>,
    pub resets_at: Option<i64>,
    pub status: Option<String>,
}

impl Window {
    fn is_empty(&self) -> bool {
        self == &Window::default()
    }
}

/// The windows one response reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Windows {
    /// The subscription's overall status, and when its binding window resets.
    pub status: Option<String>,
    pub resets_at: Option<i64>,
    /// The window that binds now (`five_hour`, `seven_day`, …).
    pub representative_claim: Option<String>,
    pub five_hour: Option<Window>,
    pub seven_day: Option<Window>,
    pub overage: Option<Window>,
    pub fallback_percentage: Option<f64>,
}

/// One of an API key's rate limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct Limit {
    #[ts(type = "number | null")]
    pub limit: Option<u64>,
    #[ts(type = "number | null")]
    pub remaining: Option<u64>,
    /// RFC 3339, as the API sends it.
    pub resets_at: Option<String>,
}

/// An API key's rate limits, as one response reported them (the organisation's headroom).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    pub requests: Option<Limit>,
    pub tokens: Option<Limit>,
    pub input_tokens: Option<Limit>,
    pub output_tokens: Option<Limit>,
}

/// A credential's short, non-reversible name: 12 hex digits of a SHA-256 of it (48 bits:
/// enough to tell a user's few credentials apart, far too few to find the credential).
pub fn account(credential: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"agent-budget account:");
    h.update(credential);
    hex::encode(&h.finalize()[..6])
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    (!v.is_empty() && v.len() <= 64).then_some(v)
}

/// A status or claim: a short lowercase word, else nothing.
fn word(headers: &HeaderMap, name: &str) -> Option<String> {
    let v = text(headers, name)?;
    let ok = v.len() <= 32 && v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    ok.then(|| v.to_string())
}

fn fraction(headers: &HeaderMap, name: &str) -> Option<f64> {
    let v: f64 = text(headers, name)?.parse().ok()?;
    (v.is_finite() && (0.0..=MAX_UTILIZATION).contains(&v)).then_some(v)
}

/// A reset instant in epoch seconds: as sent (seconds), or from RFC 3339; years 2000–9999.
fn instant(headers: &HeaderMap, name: &str) -> Option<i64> {
    let v = text(headers, name)?;
    let secs = match v.parse::<i64>() {
        Ok(s) => s,
        Err(_) => chrono::DateTime::parse_from_rfc3339(v).ok()?.timestamp(),
    };
    (946_684_800..253_402_300_800)
        .contains(&secs)
        .then_some(secs)
}

/// A window's headers: utilization, reset, status.
type Names = [&'static str; 3];
const FIVE_HOUR: Names = [
    "anthropic-ratelimit-unified-5h-utilization",
    "anthropic-ratelimit-unified-5h-reset",
    "anthropic-ratelimit-unified-5h-status",
];
const SEVEN_DAY: Names = [
    "anthropic-ratelimit-unified-7d-utilization",
    "anthropic-ratelimit-unified-7d-reset",
    "anthropic-ratelimit-unified-7d-status",
];
const OVERAGE: Names = [
    "anthropic-ratelimit-unified-overage-utilization",
    "anthropic-ratelimit-unified-overage-reset",
    "anthropic-ratelimit-unified-overage-status",
];
const STATUS: &str = "anthropic-ratelimit-unified-status";
const RESET: &str = "anthropic-ratelimit-unified-reset";
const CLAIM: &str = "anthropic-ratelimit-unified-representative-claim";
const FALLBACK: &str = "anthropic-ratelimit-unified-fallback-percentage";

fn window(headers: &HeaderMap, [utilization, reset, status]: Names) -> Option<Window> {
    let w = Window {
        utilization: fraction(headers, utilization),
        resets_at: instant(headers, reset),
        status: word(headers, status),
    };
    (!w.is_empty()).then_some(w)
}

/// The subscription windows a response reports; None when it reports none (an API key's
/// answer, or an upstream that sends no such headers). Most answers have none: one look
/// each at the headers that always come with them decides.
pub fn windows(headers: &HeaderMap) -> Option<Windows> {
    let any = [STATUS, RESET, FIVE_HOUR[0], SEVEN_DAY[0], OVERAGE[2]];
    if !any.iter().any(|h| headers.contains_key(*h)) {
        return None;
    }
    let w = Windows {
        status: word(headers, STATUS),
        resets_at: instant(headers, RESET),
        representative_claim: word(headers, CLAIM),
        five_hour: window(headers, FIVE_HOUR),
        seven_day: window(headers, SEVEN_DAY),
        overage: window(headers, OVERAGE),
        fallback_percentage: fraction(headers, FALLBACK),
    };
    (w != Windows::default()).then_some(w)
}

/// A rate limit's headers: limit, remaining, reset.
const LIMITS: [Names; 4] = [
    [
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ],
    [
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ],
    [
        "anthropic-ratelimit-input-tokens-limit",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
    ],
    [
        "anthropic-ratelimit-output-tokens-limit",
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    ],
];

fn limit(headers: &HeaderMap, [limit, remaining, reset]: Names) -> Option<Limit> {
    let number = |name: &str| -> Option<u64> { text(headers, name)?.parse().ok() };
    let resets_at = text(headers, reset)
        .filter(|v| chrono::DateTime::parse_from_rfc3339(v).is_ok())
        .map(str::to_string);
    let l = Limit {
        limit: number(limit),
        remaining: number(remaining),
        resets_at,
    };
    (l != Limit::default()).then_some(l)
}

/// An API key's rate limits a response reports; None when it reports none.
pub fn rate_limits(headers: &HeaderMap) -> Option<RateLimits> {
    if !LIMITS.iter().flatten().any(|h| headers.contains_key(*h)) {
        return None;
    }
    let [requests, tokens, input, output] = LIMITS;
    let r = RateLimits {
        requests: limit(headers, requests),
        tokens: limit(headers, tokens),
        input_tokens: limit(headers, input),
        output_tokens: limit(headers, output),
    };
    (r != RateLimits::default()).then_some(r)
}

/// Where a window is heading at its recent pace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pace {
    /// Utilization gained per hour (a fraction).
    pub per_hour: f64,
    /// When it fills at this pace (epoch seconds), if before it resets.
    pub fills_at: Option<i64>,
}

/// The least time between two readings a pace is drawn from: closer ones are noise.
const MIN_SPAN_SECS: i64 = 60;

/// The pace of one window instance from its readings (epoch seconds, utilization), oldest
/// first: the rise from the first to the last, if they are a minute apart and it rose.
pub fn pace(readings: &[(i64, f64)], resets_at: Option<i64>) -> Option<Pace> {
    let (&(t0, u0), &(t1, u1)) = (readings.first()?, readings.last()?);
    let span = t1 - t0;
    if span < MIN_SPAN_SECS || u1 <= u0 {
        return None;
    }
    let per_sec = (u1 - u0) / span as f64;
    let to_full = ((1.0 - u1).max(0.0) / per_sec).min(1e9) as i64;
    let fills_at = t1 + to_full;
    Some(Pace {
        per_hour: per_sec * 3600.0,
        fills_at: resets_at.is_none_or(|r| fills_at < r).then_some(fills_at),
    })
}

/// The thresholds (percent) `utilization` has reached that are not in `raised`.
pub fn reached(utilization: f64, thresholds: &[u8], raised: &[u8]) -> Vec<u8> {
    thresholds
        .iter()
        .copied()
        .filter(|t| utilization * 100.0 >= f64::from(*t) && !raised.contains(t))
        .collect()
}
