use super::*;

/// Exports Claude Code 2.1.328 sent a gateway after writing a 3-line file (lines "added" 4:
/// its count) and starting a subagent, captured from the real client.
const JSON_EXPORT: &[u8] = include_bytes!("fixtures/claude-code-2.1.328-metrics.json");
const PROTOBUF_EXPORT: &[u8] = include_bytes!("fixtures/claude-code-2.1.328-metrics.pb");

fn total(points: &[Point], c: Counter) -> u64 {
    points
        .iter()
        .filter(|p| p.counter == c)
        .map(|p| p.value)
        .sum()
}

#[test]
fn claude_codes_json_export_gives_its_sessions_counters() {
    let points = metrics(JSON_EXPORT, true).unwrap();
    assert!(
        points
            .iter()
            .all(|p| p.session == "7ded241e-8719-4422-80cf-24356cfbd3fa")
    );
    assert!(
        points.iter().all(|p| !p.cumulative),
        "Claude Code sends deltas"
    );
    assert_eq!(total(&points, Counter::LinesAdded), 4);
    assert_eq!(total(&points, Counter::LinesRemoved), 0);
    assert_eq!(total(&points, Counter::Commits), 0);
    // active_time.total: 0.726 s (user) + 0.498 s (cli).
    assert_eq!(total(&points, Counter::ActiveMs), 726 + 498);
    // Cost, tokens, sessions and edit decisions are not kept.
    assert_eq!(points.len(), 4);
}

#[test]
fn claude_codes_protobuf_export_gives_its_sessions_counters() {
    let points = metrics(PROTOBUF_EXPORT, false).unwrap();
    assert!(!points.is_empty());
    assert!(
        points
            .iter()
            .all(|p| p.session == "d9d32568-75ba-4ed0-bb6f-b5c419d6edfc")
    );
    assert!(points.iter().all(|p| !p.cumulative));
    assert_eq!(total(&points, Counter::LinesAdded), 4);
    assert_eq!(
        points
            .iter()
            .filter(|p| p.counter == Counter::ActiveMs)
            .count(),
        2,
        "user and cli time are two series"
    );
}

#[test]
fn the_same_attributes_in_any_order_are_one_series() {
    let a = [
        ("a".to_string(), "1".to_string()),
        ("b".to_string(), "2".to_string()),
    ];
    let b = [a[1].clone(), a[0].clone()];
    assert_eq!(series(&a), series(&b));
    let c = [("a".to_string(), "12".to_string())];
    let d = [("a1".to_string(), "2".to_string())];
    assert_ne!(series(&c), series(&d), "key and value boundaries count");
}

fn export(name: &str, temporality: u64, value: &str, session: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"resourceMetrics": [{"resource": {"attributes": []}, "scopeMetrics": [{"metrics": [
        {"name": name, "sum": {"aggregationTemporality": temporality, "dataPoints": [
            {"attributes": [{"key": "session.id", "value": {"stringValue": session}}, {"key": "type", "value": {"stringValue": "added"}}],
             "asInt": value}]}}]}]}]}))
    .unwrap()
}

#[test]
fn cumulative_points_are_marked_and_unknown_temporality_is_dropped() {
    let p = metrics(&export("claude_code.commit.count", 2, "3", "s1"), true).unwrap();
    assert_eq!(p[0].counter, Counter::Commits);
    assert!(p[0].cumulative);
    assert_eq!(p[0].value, 3);
    assert!(
        metrics(&export("claude_code.commit.count", 0, "3", "s1"), true)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn hostile_values_and_sessions_are_dropped() {
    for (value, session) in [
        ("-5", "s1"),
        ("99999999999999", "s1"),
        ("1", ""),
        ("1", "has space"),
        ("1", &"x".repeat(201)),
    ] {
        let p = metrics(
            &export("claude_code.lines_of_code.count", 1, value, session),
            true,
        )
        .unwrap();
        assert!(p.is_empty(), "{value} {session:?} was kept");
    }
    let nan = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"claude_code.commit.count","sum":{"aggregationTemporality":1,"dataPoints":[{"attributes":[{"key":"session.id","value":{"stringValue":"s"}}],"asDouble":"NaN"}]}}]}]}]}"#;
    assert!(metrics(nan, true).unwrap().is_empty());
}

#[test]
fn an_export_yields_at_most_max_points() {
    let point = serde_json::json!({"attributes": [{"key": "session.id", "value": {"stringValue": "s"}}], "asInt": "1"});
    let many = serde_json::json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": "claude_code.commit.count", "sum": {"aggregationTemporality": 1, "dataPoints": vec![point; MAX_POINTS + 10]}}]}]}]});
    let p = metrics(&serde_json::to_vec(&many).unwrap(), true).unwrap();
    assert_eq!(p.len(), MAX_POINTS);
}

#[test]
fn malformed_protobuf_is_an_error_never_a_panic() {
    // Every truncation of a real export, and bytes flipped through it.
    for n in 0..PROTOBUF_EXPORT.len() {
        let _ = metrics(&PROTOBUF_EXPORT[..n], false);
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2_000 {
        let mut bytes = PROTOBUF_EXPORT.to_vec();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state as usize) % bytes.len();
            bytes[i] = (state >> 32) as u8;
        }
        let _ = metrics(&bytes, false);
    }
    assert!(matches!(
        metrics(&[0x0a, 0xff], false),
        Err(OtlpError::Protobuf(_))
    ));
    assert!(matches!(
        metrics(&[0x0b], false),
        Err(OtlpError::Protobuf(_))
    ));
    assert!(matches!(metrics(b"{", true), Err(OtlpError::Json(_))));
}
