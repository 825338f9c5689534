use super::*;
use axum::http::{HeaderName, HeaderValue};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// A Max subscription's answer as Anthropic sends it (CLAUDE_CODE_GATEWAY.md).
const ALLOWED: &[(&str, &str)] = &[
    ("anthropic-ratelimit-unified-status", "allowed"),
    ("anthropic-ratelimit-unified-reset", "1796392800"),
    (
        "anthropic-ratelimit-unified-representative-claim",
        "five_hour",
    ),
    ("anthropic-ratelimit-unified-5h-utilization", "0.43"),
    ("anthropic-ratelimit-unified-5h-reset", "1796392800"),
    ("anthropic-ratelimit-unified-5h-status", "allowed"),
    ("anthropic-ratelimit-unified-7d-utilization", "0.12"),
    ("anthropic-ratelimit-unified-7d-reset", "1796860800"),
    ("anthropic-ratelimit-unified-7d-status", "allowed"),
    ("anthropic-ratelimit-unified-fallback-percentage", "0.5"),
];

#[test]
fn every_unified_header_is_read() {
    let w = windows(&headers(ALLOWED)).unwrap();
    assert_eq!(w.status.as_deref(), Some("allowed"));
    assert_eq!(w.resets_at, Some(1_796_392_800));
    assert_eq!(w.representative_claim.as_deref(), Some("five_hour"));
    assert_eq!(
        w.five_hour,
        Some(Window {
            utilization: Some(0.43),
            resets_at: Some(1_796_392_800),
            status: Some("allowed".into())
        })
    );
    assert_eq!(w.seven_day.unwrap().utilization, Some(0.12));
    assert_eq!(w.overage, None);
    assert_eq!(w.fallback_percentage, Some(0.5));
}

#[test]
fn a_refusal_past_the_limit_and_the_overage_window_are_read() {
    let h = headers(&[
        ("anthropic-ratelimit-unified-status", "rejected"),
        ("anthropic-ratelimit-unified-5h-utilization", "1.02"),
        ("anthropic-ratelimit-unified-5h-status", "rejected"),
        (
            "anthropic-ratelimit-unified-overage-status",
            "allowed_warning",
        ),
        ("anthropic-ratelimit-unified-overage-utilization", "0.81"),
        (
            "anthropic-ratelimit-unified-overage-reset",
            "2026-12-31T23:00:00Z",
        ),
    ]);
    let w = windows(&h).unwrap();
    assert_eq!(w.five_hour.unwrap().utilization, Some(1.02));
    let o = w.overage.unwrap();
    assert_eq!(
        (o.utilization, o.resets_at, o.status.as_deref()),
        (Some(0.81), Some(1_798_758_000), Some("allowed_warning"))
    );
    assert_eq!(w.seven_day, None);
}

#[test]
fn missing_and_garbage_values_are_left_out() {
    assert_eq!(windows(&HeaderMap::new()), None);
    assert_eq!(
        windows(&headers(&[("anthropic-ratelimit-requests-limit", "50")])),
        None
    );
    for (name, bad) in [
        ("anthropic-ratelimit-unified-5h-utilization", "NaN"),
        ("anthropic-ratelimit-unified-5h-utilization", "inf"),
        ("anthropic-ratelimit-unified-5h-utilization", "-0.1"),
        ("anthropic-ratelimit-unified-5h-utilization", "1e300"),
        ("anthropic-ratelimit-unified-5h-utilization", "43%"),
        ("anthropic-ratelimit-unified-5h-reset", "tomorrow"),
        ("anthropic-ratelimit-unified-5h-reset", "-5"),
        (
            "anthropic-ratelimit-unified-5h-reset",
            "99999999999999999999",
        ),
        ("anthropic-ratelimit-unified-5h-status", "<script>"),
        ("anthropic-ratelimit-unified-5h-status", "ALLOWED"),
        ("anthropic-ratelimit-unified-5h-status", &"a".repeat(65)),
    ] {
        assert_eq!(windows(&headers(&[(name, bad)])), None, "{name}: {bad}");
    }
    // One bad value leaves the others.
    let h = headers(&[
        ("anthropic-ratelimit-unified-5h-utilization", "0.2"),
        ("anthropic-ratelimit-unified-5h-reset", "soon"),
    ]);
    let w = windows(&h).unwrap().five_hour.unwrap();
    assert_eq!((w.utilization, w.resets_at), (Some(0.2), None));
}

#[test]
fn an_api_keys_rate_limits_are_read() {
    let h = headers(&[
        ("anthropic-ratelimit-requests-limit", "4000"),
        ("anthropic-ratelimit-requests-remaining", "3999"),
        ("anthropic-ratelimit-requests-reset", "2026-12-04T10:00:00Z"),
        ("anthropic-ratelimit-tokens-remaining", "x"),
        ("anthropic-ratelimit-output-tokens-limit", "80000"),
        ("anthropic-ratelimit-input-tokens-reset", "later"),
    ]);
    let r = rate_limits(&h).unwrap();
    assert_eq!(
        r.requests,
        Some(Limit {
            limit: Some(4000),
            remaining: Some(3999),
            resets_at: Some("2026-12-04T10:00:00Z".into())
        })
    );
    assert_eq!(r.tokens, None, "a garbage value alone is no limit");
    assert_eq!(r.input_tokens, None);
    assert_eq!(r.output_tokens.unwrap().limit, Some(80_000));
    assert_eq!(rate_limits(&headers(ALLOWED)), None);
}

#[test]
fn an_account_is_short_stable_and_not_the_credential() {
    let a = account(b"sk-ant-oat01-secret");
    assert_eq!(a.len(), 12);
    assert_eq!(a, account(b"sk-ant-oat01-secret"));
    assert_ne!(a, account(b"sk-ant-oat01-secreT"));
    assert!(!"sk-ant-oat01-secret".contains(&a));
}

#[test]
fn the_pace_says_when_a_window_fills_if_before_it_resets() {
    // 0.40 → 0.50 in half an hour: 0.2 an hour, full in 2.5 h more.
    let r = [(0, 0.40), (900, 0.45), (1800, 0.50)];
    let p = pace(&r, Some(20_000)).unwrap();
    assert!((p.per_hour - 0.2).abs() < 1e-9);
    assert_eq!(p.fills_at, Some(1800 + 9000));
    assert_eq!(
        pace(&r, Some(10_000)).unwrap().fills_at,
        None,
        "resets first"
    );
    assert_eq!(
        pace(&[(0, 0.4), (30, 0.5)], None),
        None,
        "too close to tell"
    );
    assert_eq!(pace(&[(0, 0.5), (600, 0.5)], None), None, "not rising");
    assert_eq!(pace(&[], None), None);
}

#[test]
fn thresholds_are_reached_once() {
    assert_eq!(reached(0.79, &[80, 95], &[]), Vec::<u8>::new());
    assert_eq!(reached(0.8, &[80, 95], &[]), vec![80]);
    assert_eq!(reached(1.02, &[80, 95], &[80]), vec![95]);
}
