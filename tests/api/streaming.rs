//! Streaming: pass-through without buffering, usage from SSE, broken streams and hang-ups.

use crate::helpers::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;

fn stream_body(model: &str) -> Value {
    let mut b = body(model, 1000);
    b["stream"] = json!(true);
    b
}

#[tokio::test]
async fn streams_pass_through_and_are_charged_from_sse_usage() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "team", "max_dollars": "10"}))
        .await;
    let usage =
        json!({"input_tokens": 1000, "cache_read_input_tokens": 2000, "output_tokens": 500});
    let r = app
        .send(
            Some("team"),
            &stream_body("claude-sonnet-4-6"),
            Some(json!({"usage": usage})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(r.headers()["x-agent-budget-id"], "team");
    let text = r.text().await.unwrap();
    let id = text
        .split("\"id\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    let expected: String = mock_upstream::events(
        "claude-sonnet-4-6",
        &usage,
        "Hello from the mock upstream.",
        id,
    )
    .concat();
    assert_eq!(
        text, expected,
        "the same bytes, events and order as the upstream sent"
    );
    assert!(text.ends_with("event: message_stop\ndata: {\"type\": \"message_stop\"}\n\n"));
    // 1000 × $3 + 2000 × $0.30 + 500 × $15 per MTok = 0.003 + 0.0006 + 0.0075
    let rec = &app.usage("team").await[0];
    assert_eq!(
        (
            rec["cost_dollars"].as_str(),
            rec["stream"].as_bool(),
            rec["status"].as_str()
        ),
        (Some("0.0111"), Some(true), Some("ok"))
    );
    assert_eq!(rec["output_tokens"], 500);
    assert_eq!(app.budget("team").await["reserved_dollars"], "0");
}

#[tokio::test]
async fn the_first_chunk_arrives_while_the_upstream_is_still_streaming() {
    let app = spawn_app().await;
    // The upstream sends three events and then nothing more, holding the stream open: a
    // proxy that waited for the whole stream would never pass the first event on.
    let script = json!({"hang_after": 3, "text": "one two three"});
    let r = app
        .send(None, &stream_body("claude-sonnet-4-6"), Some(script))
        .await;
    let mut chunks = r.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(30), chunks.next())
        .await
        .expect("the first event was held back")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    assert_eq!(
        app.mock
            .state
            .open_streams
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the upstream is still streaming"
    );
    assert!(
        app.usage("default").await.is_empty(),
        "still streaming: nothing settled yet"
    );
    drop(chunks);
    // A stream read to its end has its record committed before its last byte arrives.
    let r = app
        .send(
            None,
            &stream_body("claude-sonnet-4-6"),
            Some(json!({"text": "a b c"})),
        )
        .await;
    let mut rest = Vec::new();
    let mut chunks = r.bytes_stream();
    while let Some(c) = chunks.next().await {
        rest.extend_from_slice(&c.unwrap());
    }
    assert!(String::from_utf8_lossy(&rest).contains("message_stop"));
    let records = app.usage("default").await;
    assert!(
        records.iter().any(|r| r["status"] == "ok"),
        "the record is committed before the stream ends: {records:?}"
    );
}

#[tokio::test]
async fn a_broken_upstream_stream_ends_with_an_error_event_and_is_charged_as_estimated() {
    let app = spawn_app().await;
    let usage = json!({"input_tokens": 1000, "output_tokens": 500});
    let script =
        json!({"usage": usage, "break_after": 5, "chunk_delay_ms": 10, "text": "a b c d e f g h"});
    let r = app
        .send(None, &stream_body("claude-sonnet-4-6"), Some(script))
        .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("message_start") && !text.contains("message_stop"));
    assert!(text.ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"agent-budget: the upstream stream broke off before the message finished\"}}\n\n"), "{text}");
    let rec = &app.usage("default").await[0];
    assert_eq!(
        (
            rec["status"].as_str(),
            rec["estimated"].as_bool(),
            rec["http_status"].as_u64()
        ),
        (Some("upstream_error"), Some(true), Some(200))
    );
    assert_eq!(
        rec["input_tokens"], 1000,
        "input seen in message_start is charged"
    );
    assert!(dollars(&rec["cost_dollars"]) >= agent_budget::money::Money::parse("0.003").unwrap());
    assert_eq!(app.budget("default").await["reserved_dollars"], "0");
}

#[tokio::test]
async fn an_upstream_error_event_is_relayed_and_charged_as_estimated() {
    let app = spawn_app().await;
    let script =
        json!({"usage": {"input_tokens": 100, "output_tokens": 50}, "error_event_after": 4});
    let text = app
        .send(None, &stream_body("claude-sonnet-4-6"), Some(script))
        .await
        .text()
        .await
        .unwrap();
    assert!(text.ends_with("event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n"), "{text}");
    assert_eq!(
        text.matches("event: error").count(),
        1,
        "no second error event is added"
    );
    let rec = &app.usage("default").await[0];
    assert_eq!(
        (rec["status"].as_str(), rec["estimated"].as_bool()),
        (Some("upstream_error"), Some(true))
    );
}

#[tokio::test]
async fn a_client_hanging_up_mid_stream_is_charged_for_what_was_seen() {
    let app = spawn_app().await;
    let script = json!({"chunk_delay_ms": 200, "usage": {"input_tokens": 1000, "output_tokens": 800}, "text": "a b c d e f g h i j"});
    let r = app
        .send(None, &stream_body("claude-sonnet-4-6"), Some(script))
        .await;
    let mut chunks = r.bytes_stream();
    let first = chunks.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    drop(chunks);
    app.eventually("the aborted stream to be recorded", || async {
        !app.usage("default").await.is_empty()
    })
    .await;
    let rec = &app.usage("default").await[0];
    assert_eq!(
        (rec["status"].as_str(), rec["estimated"].as_bool()),
        (Some("client_aborted"), Some(true))
    );
    assert_eq!(rec["input_tokens"], 1000);
    assert_eq!(app.budget("default").await["reserved_dollars"], "0");
}
