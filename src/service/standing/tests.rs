use super::*;
use chrono::TimeZone;

fn m(s: &str) -> Money {
    Money::parse(s).unwrap()
}

fn standing(spent: &str) -> Standing {
    Standing {
        spent: m(spent),
        cap: m("5"),
        period: Period::Daily,
        resets_at: Some(Utc.with_ymd_and_hms(2026, 12, 5, 0, 0, 0).unwrap()),
    }
}

fn allowed(spent: &str) -> Vec<(String, String)> {
    let mut h = HeaderMap::new();
    standing(spent).allowed(&mut h);
    let mut v: Vec<(String, String)> = h
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    v.sort();
    v
}

fn get<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn the_headers_at_0_80_and_96_percent_of_a_cap() {
    let reset = "1796428800";
    for (spent, status, utilization, surpassed) in [
        ("0", "allowed", "0", None),
        ("3.75", "allowed", "0.75", None),
        ("4", "allowed_warning", "0.8", Some("0.75")),
        ("4.1", "allowed_warning", "0.82", Some("0.75")),
        ("4.8", "allowed_warning", "0.96", Some("0.95")),
        ("4.9999", "allowed_warning", "0.99", Some("0.95")),
    ] {
        let h = allowed(spent);
        assert_eq!(get(&h, STATUS), Some(status), "{spent}");
        assert_eq!(get(&h, OVERAGE_STATUS), Some(status), "{spent}");
        assert_eq!(get(&h, CLAIM), Some("overage"));
        assert_eq!(get(&h, UTILIZATION), Some(utilization), "{spent}");
        assert_eq!(get(&h, SURPASSED), surpassed, "{spent}");
        assert_eq!(get(&h, RESET), Some(reset));
        assert_eq!(get(&h, OVERAGE_RESET), Some(reset));
    }
}

#[test]
fn a_refusal_at_the_cap_leaves_out_the_claim_and_the_overage_status() {
    let h = standing("4.9").rejected();
    let names: Vec<&str> = h.iter().map(|(k, _)| *k).collect();
    assert!(!names.contains(&CLAIM) && !names.contains(&OVERAGE_STATUS));
    let value = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
    assert_eq!(value(STATUS), Some("rejected"));
    assert_eq!(
        (value(UTILIZATION), value(SURPASSED)),
        (Some("1"), Some("1"))
    );
    assert_eq!(value(OVERAGE_PERIOD), Some("daily"));
    assert_eq!(value(RESET), Some("1796428800"));
    let total = Standing {
        period: Period::Total,
        resets_at: None,
        ..standing("5")
    };
    let names: Vec<&str> = total.rejected().iter().map(|(k, _)| *k).collect();
    assert!(
        !names.contains(&OVERAGE_PERIOD) && !names.contains(&RESET),
        "a total budget never resets"
    );
}

#[test]
fn the_usage_endpoint_pairs_cents_and_percent_with_the_header_reset() {
    let u = standing("4.1").usage();
    assert_eq!(u["extra_usage"]["monthly_limit"], 500);
    assert_eq!(u["extra_usage"]["used_credits"], 410);
    assert_eq!(u["extra_usage"]["utilization"], 82);
    let row = &u["limits"][0];
    assert_eq!(
        (&row["group"], &row["percent"]),
        (&json!("daily"), &json!(82))
    );
    assert_eq!(row["resets_at"], "2026-12-05T00:00:00.000Z");
    assert_eq!(row["severity"], "warning");
    assert_eq!(standing("4.8").usage()["limits"][0]["severity"], "critical");
    assert_eq!(
        standing("5.5").usage()["extra_usage"]["utilization"],
        110,
        "over, above 100"
    );
    let none = uncapped_usage(m("12.4"), m("1.24"), m("3"));
    assert_eq!(none["limits"], json!([]));
    assert_eq!(none["extra_usage"]["monthly_limit"], Value::Null);
    assert_eq!(none["extra_usage"]["daily"]["used_credits"], 124);
    assert_eq!(none["extra_usage"]["used_credits"], 1240);
}

#[test]
fn only_the_upstreams_rate_limit_headers_are_stripped() {
    let mut h = HeaderMap::new();
    h.insert(
        "anthropic-ratelimit-requests-remaining",
        HeaderValue::from_static("9"),
    );
    h.insert(
        "anthropic-ratelimit-unified-status",
        HeaderValue::from_static("allowed"),
    );
    h.insert("request-id", HeaderValue::from_static("req_1"));
    strip_upstream(&mut h);
    assert_eq!(h.len(), 1);
    assert!(h.contains_key("request-id"));
}
