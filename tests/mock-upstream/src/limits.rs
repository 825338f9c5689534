//! The rate-limit headers the API sends on every answer.

/// The organisation's rate limits, which the API sends on every answer to an API key (the
/// values of a small tier; the proxy must not pass them on as a virtual key's user's own).
pub const RATE_LIMITS: [(&str, &str); 6] = [
    ("anthropic-ratelimit-requests-limit", "50"),
    ("anthropic-ratelimit-requests-remaining", "49"),
    ("anthropic-ratelimit-requests-reset", "2026-12-04T12:00:01Z"),
    ("anthropic-ratelimit-input-tokens-limit", "30000"),
    ("anthropic-ratelimit-input-tokens-remaining", "29000"),
    ("anthropic-ratelimit-output-tokens-limit", "8000"),
];

pub(crate) fn rate_limits(h: &mut axum::http::HeaderMap) {
    for (k, v) in RATE_LIMITS {
        h.insert(k, axum::http::HeaderValue::from_static(v));
    }
}
