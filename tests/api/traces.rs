//! OpenTelemetry traces (docs/metrics.md): with an OTLP endpoint configured, one well-formed
//! span per request reaches the collector, decoded here with the official protobuf types. No
//! key or prompt is ever in a span. (Without an endpoint no exporter starts: `traces::config`'s
//! unit tests.)

use crate::helpers::*;
use agent_budget::traces::{Config, Value as Attr};
use axum::body::Bytes;
use axum::http::HeaderMap;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;
use std::sync::{Arc, Mutex};

type Got = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A collector on loopback that keeps every export it is sent.
async fn collector() -> (String, Got) {
    let got: Got = Default::default();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |h: HeaderMap, b: Bytes| {
            let keep = keep.clone();
            async move { keep.lock().unwrap().push((h, b)) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}/v1/traces"), got)
}

fn spans(got: &Got) -> Vec<Span> {
    let exports = got.lock().unwrap();
    exports
        .iter()
        .flat_map(|(_, b)| {
            ExportTraceServiceRequest::decode(b.as_ref())
                .unwrap()
                .resource_spans
        })
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

fn attr(s: &Span, key: &str) -> Option<Value> {
    s.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.clone()?.value)
}

fn text(s: &str) -> Option<Value> {
    Some(Value::StringValue(s.into()))
}

#[tokio::test]
async fn each_request_is_one_span_with_the_genai_attributes_and_no_secrets() {
    let (endpoint, got) = collector().await;
    let config = Config {
        endpoint,
        headers: vec![("x-collector-token".into(), "c-123".into())],
        resource: vec![("service.name".into(), Attr::Text("agent-budget".into()))],
        timeout: std::time::Duration::from_secs(5),
    };
    let app = spawn_with(|s| s.traces = Some(config)).await;
    app.create_budget(json!({"name": "team", "max_dollars": "0.05"}))
        .await;
    let cached = json!({"usage": {"input_tokens": 10, "cache_read_input_tokens": 200, "cache_creation_input_tokens": 30, "output_tokens": 40}});
    let r = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", "sk-test-secret-key")
        .header("x-budget-id", "team")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("x-mock", cached.to_string())
        .json(&body("claude-haiku-4-5", 100))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.send(Some("team"), &body("claude-haiku-4-5", 100), None)
            .await
            .status(),
        200
    );
    // Refused: its worst case does not fit the cap.
    assert_eq!(
        app.send(Some("team"), &body("claude-haiku-4-5", 20_000), None)
            .await
            .status(),
        429
    );
    app.eventually("three spans at the collector", || async {
        spans(&got).len() >= 3
    })
    .await;
    let all = spans(&got);
    assert_eq!(all.len(), 3, "one span per request");
    let first = all
        .iter()
        .find(|s| !s.parent_span_id.is_empty())
        .expect("the traced request");
    assert_eq!(
        hex::encode(&first.trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(hex::encode(&first.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(
        (first.name.as_str(), first.kind),
        ("chat claude-haiku-4-5", 3)
    );
    assert!(
        first.end_time_unix_nano >= first.start_time_unix_nano && first.start_time_unix_nano > 0
    );
    assert_eq!(attr(first, "gen_ai.operation.name"), text("chat"));
    assert_eq!(attr(first, "gen_ai.provider.name"), text("anthropic"));
    assert_eq!(
        attr(first, "gen_ai.request.model"),
        text("claude-haiku-4-5")
    );
    assert_eq!(
        attr(first, "gen_ai.request.max_tokens"),
        Some(Value::IntValue(100))
    );
    // The convention's input counts the cache: 10 + 200 + 30.
    assert_eq!(
        attr(first, "gen_ai.usage.input_tokens"),
        Some(Value::IntValue(240))
    );
    assert_eq!(
        attr(first, "gen_ai.usage.cache_read.input_tokens"),
        Some(Value::IntValue(200))
    );
    assert_eq!(
        attr(first, "gen_ai.usage.output_tokens"),
        Some(Value::IntValue(40))
    );
    assert_eq!(attr(first, "agent_budget.budget"), text("team"));
    assert_eq!(attr(first, "agent_budget.decision"), text("admitted"));
    let records = app.usage("team").await;
    let charged = records
        .iter()
        .find(|r| r["cache_read_tokens"] == 200)
        .unwrap();
    assert_eq!(
        attr(first, "agent_budget.cost_dollars"),
        text(charged["cost_dollars"].as_str().unwrap())
    );
    assert!(first.status.as_ref().is_none_or(|s| s.code != 2));
    let refused = all
        .iter()
        .find(|s| attr(s, "agent_budget.decision") == text("refused"))
        .unwrap();
    assert_eq!(attr(refused, "agent_budget.refused_by"), text("dollars"));
    assert_eq!(
        refused.status.as_ref().map(|s| s.code),
        Some(2),
        "an error span"
    );
    assert!(refused.parent_span_id.is_empty() && refused.trace_id != first.trace_id);
    // The collector's own header went with every export; no key, token or prompt did.
    for (h, b) in got.lock().unwrap().iter() {
        assert_eq!(h["x-collector-token"], "c-123");
        assert_eq!(h["content-type"], "application/x-protobuf");
        for secret in ["sk-test", "Hello", app.admin_token.as_deref().unwrap()] {
            assert!(
                !b.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} in a span"
            );
        }
    }
}

#[tokio::test]
async fn the_spans_of_the_last_requests_are_sent_before_the_server_stops() {
    let (endpoint, got) = collector().await;
    let config = Config {
        endpoint,
        headers: Vec::new(),
        resource: Vec::new(),
        timeout: std::time::Duration::from_secs(5),
    };
    let app = spawn_with(|s| s.traces = Some(config)).await;
    for _ in 0..2 {
        let r = app.send(None, &body("claude-haiku-4-5", 100), None).await;
        assert_eq!(r.status(), 200);
    }
    // Stopped at once, inside the batch's linger: both spans are at the collector already.
    app.stop().await;
    assert_eq!(spans(&got).len(), 2);
}
