//! The rate-limit headers the API sends on every answer: an API key's rate limits, or a
//! subscription's windows.

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

/// Whether a request carries a subscription's OAuth token (`Authorization: Bearer sk-ant-oat…`).
pub(crate) fn is_subscription(h: &axum::http::HeaderMap) -> bool {
    h.get("authorization")
        .is_some_and(|v| v.as_bytes().starts_with(b"Bearer sk-ant-oat"))
}

const FIVE_HOURS: u64 = 5 * 3600;
const SEVEN_DAYS: u64 = 7 * 86_400;

/// The end of the current window of `len` seconds, counted from the epoch: the same for every
/// answer within it, as a real window's reset is.
fn window_end(len: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (now / len * len + len).to_string()
}

/// A subscription's windows (CLAUDE_CODE_GATEWAY.md) as Anthropic sends them on every answer,
/// a refusal included: rejected, past the 5-hour limit, on a 429. `overrides` replaces parts.
pub(crate) fn unified(
    h: &mut axum::http::HeaderMap,
    status: axum::http::StatusCode,
    overrides: Option<&serde_json::Value>,
) {
    let refused = status == axum::http::StatusCode::TOO_MANY_REQUESTS;
    let (five, seven) = (window_end(FIVE_HOURS), window_end(SEVEN_DAYS));
    let mut parts: Vec<(String, String)> = [
        ("status", if refused { "rejected" } else { "allowed" }),
        ("reset", five.as_str()),
        ("representative-claim", "five_hour"),
        ("5h-utilization", if refused { "1.02" } else { "0.43" }),
        ("5h-reset", five.as_str()),
        ("5h-status", if refused { "rejected" } else { "allowed" }),
        ("7d-utilization", "0.12"),
        ("7d-reset", seven.as_str()),
        ("7d-status", "allowed"),
        ("fallback-percentage", "0.5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(o) = overrides.and_then(serde_json::Value::as_object) {
        for (k, v) in o {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            match parts.iter_mut().find(|(p, _)| p == k) {
                Some(p) => p.1 = v,
                None => parts.push((k.clone(), v)),
            }
        }
    }
    for (k, v) in parts {
        let name = format!("anthropic-ratelimit-unified-{k}");
        if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_str(&v),
        ) {
            h.insert(n, v);
        }
    }
}
