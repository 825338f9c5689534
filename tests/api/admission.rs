//! Admission: blocked requests never reach upstream; concurrency never overruns a cap;
//! close calls are settled with the upstream's count_tokens.

use crate::helpers::*;
use serde_json::{Value, json};
use std::sync::Arc;

#[tokio::test]
async fn a_blocked_request_never_reaches_upstream() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "my-agents", "max_dollars": "0.40", "period": "daily"}))
        .await;
    // Sonnet 4.6, 32,000 output tokens: worst case ≥ $0.48 > $0.40.
    let r = app
        .send(Some("my-agents"), &body("claude-sonnet-4-6", 32_000), None)
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-should-retry"], "false");
    let retry: i64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=25 * 3600).contains(&retry), "retry-after {retry}");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "billing_error");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("agent-budget: budget 'my-agents' would exceed its daily cap: spent $0.00 + in flight $0.00 + this request up to $0.4"), "{msg}");
    assert!(msg.contains("> $0.40; resets "), "{msg}");
    assert_eq!(app.mock.state.messages(), 0);
    assert_eq!(
        app.mock
            .state
            .count_tokens
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no estimate could fit"
    );

    let b = app.budget("my-agents").await;
    assert_eq!(
        (
            b["blocked"].as_u64(),
            b["requests"].as_u64(),
            b["spent_dollars"].as_str()
        ),
        (Some(1), Some(0), Some("0"))
    );
    let rec = &app.usage("my-agents").await[0];
    assert_eq!(
        (
            rec["status"].as_str(),
            rec["http_status"].as_u64(),
            rec["cost_dollars"].as_str()
        ),
        (Some("blocked"), Some(429), Some("0"))
    );
    let stats = app.get("/api/stats").await;
    assert_eq!(
        (
            stats["today"]["blocked"].as_u64(),
            stats["today"]["requests"].as_u64()
        ),
        (Some(1), Some(0))
    );
}

#[tokio::test]
async fn total_budgets_and_token_caps_block_too() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "forever", "max_dollars": "0.01"}))
        .await;
    let r = app
        .send(Some("forever"), &body("claude-sonnet-4-6", 1000), None)
        .await;
    assert_eq!(r.status(), 429);
    assert!(
        r.headers().get("retry-after").is_none(),
        "a total budget never resets"
    );
    let msg = r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("its total cap") && !msg.contains("resets"),
        "{msg}"
    );

    app.create_budget(json!({"name": "tokens", "max_dollars": "100", "max_tokens": 500}))
        .await;
    let r = app
        .send(Some("tokens"), &body("claude-haiku-4-5", 1000), None)
        .await;
    assert_eq!(r.status(), 429);
    let msg = r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("total token cap") && msg.contains("> 500 tokens"),
        "{msg}"
    );
    assert_eq!(
        app.send(Some("tokens"), &body("claude-haiku-4-5", 100), None)
            .await
            .status(),
        200
    );
    assert_eq!(app.mock.state.messages(), 1);
}

#[tokio::test]
async fn concurrent_requests_never_push_spend_over_the_cap() {
    let app = Arc::new(spawn_app().await);
    // Worst case per request ≈ $0.15 (10,000 output tokens at $15/MTok) plus a tiny input
    // estimate; $1.55 fits ten of them, not eleven.
    app.create_budget(json!({"name": "team", "max_dollars": "1.55", "period": "daily"}))
        .await;
    let script = json!({"delay_ms": 1500, "usage": {"input_tokens": 25, "output_tokens": 10000}});
    let tasks: Vec<_> = (0..120)
        .map(|_| {
            let (app, script) = (app.clone(), script.clone());
            tokio::spawn(async move {
                app.send(
                    Some("team"),
                    &body("claude-sonnet-4-6", 10_000),
                    Some(script),
                )
                .await
                .status()
                .as_u16()
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    let ok = codes.iter().filter(|c| **c == 200).count();
    let blocked = codes.iter().filter(|c| **c == 429).count();
    assert_eq!(ok + blocked, 120, "{codes:?}");
    assert_eq!(ok, 10);
    assert_eq!(
        app.mock.state.messages(),
        10,
        "exactly the admitted requests reached upstream"
    );
    let b = app.budget("team").await;
    let spent = dollars(&b["spent_dollars"]);
    assert_eq!(spent, agent_budget::money::Money::parse("1.50075").unwrap());
    assert!(spent <= dollars(&b["max_dollars"]));
    assert_eq!(
        (b["reserved_dollars"].as_str(), b["blocked"].as_u64()),
        (Some("0"), Some(110))
    );
}

/// A 70 KB prompt: the estimate's range straddles the cap, so the proxy asks count_tokens.
fn big_prompt() -> Value {
    let text = "word ".repeat(14_000);
    json!({"model": "claude-sonnet-4-6", "max_tokens": 100, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn close_calls_are_decided_by_count_tokens() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "tight", "max_dollars": "0.04"}))
        .await;
    // 10,000 exact tokens: 10,000 × $3 + 100 × $15 per MTok = $0.0315 ≤ $0.04.
    let r = app
        .send(Some("tight"), &big_prompt(), Some(json!({"count": 10000})))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.mock
            .state
            .count_tokens
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let seen = app.mock.state.seen();
    let counted: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(seen[0].path, "/v1/messages/count_tokens");
    assert!(counted.get("max_tokens").is_none() && counted.get("messages").is_some());
    assert_eq!(seen[0].headers["x-api-key"], "sk-test");

    // 15,000 exact tokens: $0.0465 > the $0.04 − $0.0003 left. Blocked, not forwarded.
    let r = app
        .send(Some("tight"), &big_prompt(), Some(json!({"count": 15000})))
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(app.mock.state.messages(), 1);
}

#[tokio::test]
async fn a_failing_count_tokens_keeps_the_conservative_decision() {
    let down = spawn_with(|s| s.upstream = Some("http://127.0.0.1:9".into())).await;
    down.create_budget(json!({"name": "tight", "max_dollars": "0.04"}))
        .await;
    let r = down.send(Some("tight"), &big_prompt(), None).await;
    assert_eq!(
        r.status(),
        429,
        "fail closed when the exact count cannot be had"
    );
    assert_eq!(down.budget("tight").await["blocked"], 1);
}
