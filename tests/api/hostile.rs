//! Round two of hardening (docs/RELIABILITY.md): an upstream that lies about usage, and
//! requests whose worst case would wrap, change nothing in the books but what they must.

use crate::helpers::*;
use agent_budget::money::Money;
use futures_util::StreamExt;
use serde_json::{Value, json};

fn sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect()
}

fn start(usage: Value) -> Value {
    json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
        "content": [], "model": "claude-sonnet-4-6", "stop_reason": null, "usage": usage}})
}

fn delta(usage: Value) -> Value {
    json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage})
}

fn stop() -> Value {
    json!({"type": "message_stop"})
}

/// Streams `raw` SSE to `budget` with `max_tokens` 1,000; returns the record it made.
async fn stream_raw(app: &TestApp, raw: String) -> Value {
    let mut b = body("claude-sonnet-4-6", 1000);
    b["stream"] = json!(true);
    let script = json!({"raw": raw, "content_type": "text/event-stream"});
    let r = app.send(None, &b, Some(script)).await;
    assert_eq!(r.status(), 200);
    assert!(!r.text().await.unwrap().is_empty());
    app.usage("default").await[0].clone()
}

fn cost(rec: &Value) -> Money {
    dollars(&rec["cost_dollars"])
}

#[tokio::test]
async fn a_stream_without_usage_is_charged_its_reservation_as_estimated() {
    let app = spawn_app().await;
    let rec = stream_raw(&app, sse(&[start(json!(null)), stop()])).await;
    assert_eq!(rec["estimated"], true, "{rec}");
    // 1,000 output tokens at $15/MTok alone are $0.015; the reservation covers more.
    assert!(cost(&rec) >= dollars(&json!("0.015")), "{rec}");
    assert_eq!(app.budget("default").await["reserved_dollars"], "0");
}

#[tokio::test]
async fn a_stream_whose_final_usage_never_comes_is_charged_what_it_saw_as_estimated() {
    let app = spawn_app().await;
    let rec = stream_raw(
        &app,
        sse(&[
            start(json!({"input_tokens": 2000, "output_tokens": 1})),
            stop(),
        ]),
    )
    .await;
    assert_eq!(rec["estimated"], true, "{rec}");
    assert_eq!(rec["input_tokens"], 2000, "{rec}");
}

#[tokio::test]
async fn a_later_smaller_usage_never_lowers_the_bill() {
    let app = spawn_app().await;
    let rec = stream_raw(
        &app,
        sse(&[
            start(
                json!({"input_tokens": 10000, "cache_read_input_tokens": 5000, "output_tokens": 1}),
            ),
            delta(json!({"input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 300})),
            stop(),
        ]),
    )
    .await;
    assert_eq!(
        (
            &rec["input_tokens"],
            &rec["cache_read_tokens"],
            &rec["output_tokens"]
        ),
        (&json!(10000), &json!(5000), &json!(300)),
        "{rec}"
    );
    // 10,000 × $3 + 5,000 × $0.30 + 300 × $15 per million tokens.
    assert_eq!(rec["cost_dollars"], "0.036", "{rec}");
    assert_eq!(rec["estimated"], false);
}

/// Headers and then nothing: the upstream took the request, so its cost is unknown, not zero.
#[tokio::test]
async fn a_stream_that_ends_before_its_first_event_is_charged_its_reservation() {
    let app = spawn_with(|s| s.upstream_timeout_secs = Some(1)).await;
    let mut b = body("claude-sonnet-4-6", 1000);
    b["stream"] = json!(true);
    let r = app.send(None, &b, Some(json!({"hang_after": 0}))).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("event: error"));
    let rec = app.usage("default").await[0].clone();
    assert_eq!(
        (rec["status"].as_str(), rec["estimated"].as_bool()),
        (Some("upstream_error"), Some(true)),
        "{rec}"
    );
    assert!(cost(&rec) >= dollars(&json!("0.015")), "{rec}");
}

/// One absurd usage value used to make `/api/stats` answer 500 and the next start fail.
#[tokio::test]
async fn an_absurd_usage_is_charged_the_reservation_raises_an_alert_and_bricks_nothing() {
    let app = spawn_app().await;
    let absurd = [
        json!({"input_tokens": 10, "output_tokens": u64::MAX}),
        json!({"input_tokens": i64::MAX, "output_tokens": i64::MAX, "cache_read_input_tokens": i64::MAX}),
    ];
    for usage in &absurd {
        let r = app
            .send(
                None,
                &body("claude-sonnet-4-6", 1000),
                Some(json!({"usage": usage})),
            )
            .await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let raw = sse(&[
        start(json!({"input_tokens": 5})),
        delta(json!({"output_tokens": u64::MAX})),
        stop(),
    ]);
    stream_raw(&app, raw).await;
    let records = app.usage("default").await;
    assert_eq!(records.len(), 3);
    for rec in &records {
        assert_eq!(rec["estimated"], true, "{rec}");
        assert_eq!(rec["output_tokens"], 0, "{rec}");
        let c = cost(rec);
        assert!(
            c >= dollars(&json!("0.015")) && c < dollars(&json!("1")),
            "{rec}"
        );
    }
    let total: Money = records.iter().map(cost).sum();
    let stats = app.get("/api/stats").await;
    assert_eq!(dollars(&stats["all_time"]["dollars"]), total);
    let alerts = app.get("/api/alerts").await;
    let malformed: Vec<&Value> = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "malformed_usage")
        .collect();
    assert_eq!(malformed.len(), 1, "once per budget and period: {alerts}");
    assert!(
        malformed[0]["message"]
            .as_str()
            .unwrap()
            .contains("claude-sonnet-4-6")
    );
    // The data directory still starts, with the same books.
    let (mock, dir) = app.stop().await;
    let app = start_on(mock, dir, |_| {}).await;
    assert_eq!(
        dollars(&app.budget("default").await["spent_dollars"]),
        total
    );
    assert_eq!(
        dollars(&app.get("/api/stats").await["all_time"]["dollars"]),
        total
    );
}

/// A data directory written by a build that let a roll-up overflow into a REAL starts.
#[tokio::test]
async fn a_roll_up_left_as_real_by_an_older_build_is_read_back_as_an_integer() {
    let app = spawn_app().await;
    app.send(None, &body("claude-sonnet-4-6", 1000), None)
        .await
        .bytes()
        .await
        .unwrap();
    let (mock, dir) = app.stop().await;
    {
        let db = rusqlite_path(&dir);
        let c = rusqlite::Connection::open(db).unwrap();
        // As an older build (schema version 8) left it: REAL roll-ups, no later columns.
        c.execute_batch(
            "PRAGMA user_version = 8; UPDATE daily SET output_tokens = 1.8446744073709552e19, dollars = 9.3e18;
             ALTER TABLE usage DROP COLUMN agent_id; ALTER TABLE usage DROP COLUMN parent_agent_id;
             ALTER TABLE usage DROP COLUMN agent_type; ALTER TABLE usage DROP COLUMN project;
             ALTER TABLE virtual_keys DROP COLUMN kind;
             DROP INDEX virtual_keys_by_refresh; ALTER TABLE virtual_keys DROP COLUMN refresh_hash;
             DROP TABLE session_agents; DROP TABLE projects; DROP TABLE session_activity;
             ALTER TABLE budgets DROP COLUMN parent_id; ALTER TABLE budgets DROP COLUMN max_session_dollars;
             ALTER TABLE virtual_keys DROP COLUMN max_dollars; ALTER TABLE virtual_keys DROP COLUMN period;
             DROP INDEX usage_key; ALTER TABLE usage DROP COLUMN key_id;
             DROP INDEX virtual_keys_lineage; ALTER TABLE virtual_keys DROP COLUMN lineage;
             DROP TABLE subscriptions; ALTER TABLE budgets DROP COLUMN max_subscription_utilization;",
        )
        .unwrap();
    }
    let app = start_on(mock, dir, |_| {}).await;
    assert_eq!(app.get("/api/stats").await["all_time"]["requests"], 1);
    let spent = app.budget("default").await["spent_dollars"].clone();
    assert_eq!(spent, Money::from_picos(i64::MAX).to_string());
}

fn rusqlite_path(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join(agent_budget::store::FILE_NAME)
}

#[tokio::test]
async fn worst_cases_that_would_wrap_are_refused_by_a_cap() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "tokens", "max_dollars": "1000", "max_tokens": 100000}))
        .await;
    app.create_budget(json!({"name": "dollars", "max_dollars": "1"}))
        .await;
    let huge = body("claude-sonnet-4-6", 0);
    let mut huge = huge.clone();
    huge["max_tokens"] = json!(u64::MAX);
    let r = app.send(Some("tokens"), &huge, None).await;
    assert_eq!(r.status(), 429, "{}", r.text().await.unwrap());
    let mut searches = body("claude-sonnet-4-6", 10);
    let big = u64::MAX / 2 + 1;
    searches["tools"] = json!([
        {"type": "web_search_20250305", "name": "web_search", "max_uses": big},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": big}
    ]);
    let r = app.send(Some("dollars"), &searches, None).await;
    assert_eq!(r.status(), 429, "{}", r.text().await.unwrap());
    assert_eq!(app.mock.state.messages(), 0, "nothing was forwarded");
}

/// A stream's chunk-by-chunk reading still sees a first event on its own.
#[tokio::test]
async fn a_stream_with_its_final_usage_is_exact() {
    let app = spawn_app().await;
    let mut b = body("claude-sonnet-4-6", 1000);
    b["stream"] = json!(true);
    let r = app
        .send(
            None,
            &b,
            Some(json!({"usage": {"input_tokens": 100, "output_tokens": 20}})),
        )
        .await;
    let mut s = r.bytes_stream();
    while s.next().await.is_some() {}
    let rec = app.usage("default").await[0].clone();
    assert_eq!(
        (rec["estimated"].as_bool(), rec["output_tokens"].as_u64()),
        (Some(false), Some(20))
    );
}

/// A document the proxy cannot read (by `file_id`) is not reserved as ~100 tokens: against a
/// cap its size is asked of `count_tokens`, and a request it does not fit is refused.
#[tokio::test]
async fn content_by_reference_is_sized_by_count_tokens_before_a_cap_admits_it() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "capped", "max_dollars": "1"}))
        .await;
    let mut b = body("claude-opus-4-8", 1000);
    b["messages"] = json!([{"role": "user", "content": [
        {"type": "document", "source": {"type": "file", "file_id": "file_011CNha8iCJcU1wXNR6q4V8w"}},
        {"type": "text", "text": "Summarise this."}
    ]}]);
    // 300,000 tokens at $5/MTok: $1.50, over the $1 cap.
    let r = app
        .send(Some("capped"), &b, Some(json!({"count": 300000})))
        .await;
    assert_eq!(r.status(), 429, "{}", r.text().await.unwrap());
    assert_eq!(app.mock.state.messages(), 0, "nothing was forwarded");
    // 100,000 tokens ($0.50) fit: admitted with the counted size.
    let r = app
        .send(
            Some("capped"),
            &b,
            Some(json!({"count": 100000, "usage": {"input_tokens": 100000, "output_tokens": 10}})),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    r.bytes().await.unwrap();
    let rec = &app.usage("capped").await[0];
    assert!(
        dollars(&rec["worst_case_dollars"]) >= dollars(&rec["cost_dollars"]),
        "{rec}"
    );
}

/// The loop guard counts forwarded requests only: repeats the cap refused do not make a loop.
#[tokio::test]
async fn requests_a_cap_refused_do_not_count_towards_a_loop() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "tight", "max_dollars": "0.001",
        "loop_guard": {"repeats": 2, "minutes": 10, "action": "block"}}))
        .await;
    let request = body("claude-sonnet-4-6", 1000);
    for _ in 0..3 {
        let r = app.send(Some("tight"), &request, None).await;
        let text = r.text().await.unwrap();
        assert!(
            text.contains("daily cap") || text.contains("total cap"),
            "{text}"
        );
    }
    let r = app
        .client
        .patch(app.url("/api/budgets/tight"))
        .json(&json!({"max_dollars": "10"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app.send(Some("tight"), &request, None).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = app.send(Some("tight"), &request, None).await;
    assert_eq!(
        r.status(),
        200,
        "the second forwarded repeat makes the loop"
    );
    let r = app.send(Some("tight"), &request, None).await;
    assert_eq!(r.status(), 429);
    assert!(r.text().await.unwrap().contains("loop_guard"));
}

async fn post_with(app: &TestApp, path: &str, headers: &[(&str, &[u8])]) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(path))
        .json(&body("claude-haiku-4-5", 10));
    for (k, v) in headers {
        req = req.header(*k, reqwest::header::HeaderValue::from_bytes(v).unwrap());
    }
    req.send().await.unwrap()
}

/// An empty, unreadable or repeated `X-Budget-Id` is a 400, never a charge to `default`.
#[tokio::test]
async fn a_bad_budget_header_is_refused_not_charged_to_default() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "a", "max_dollars": "5"}))
        .await;
    app.create_budget(json!({"name": "b", "max_dollars": "5"}))
        .await;
    let key: (&str, &[u8]) = ("x-api-key", b"sk-test");
    for bad in [
        vec![key, ("x-budget-id", b"")],
        vec![key, ("x-budget-id", b"   ")],
        vec![key, ("x-budget-id", b"caf\xc3\xa9")],
        vec![key, ("x-budget-id", b"a"), ("x-budget-id", b"b")],
    ] {
        let r = post_with(&app, "/v1/messages", &bad).await;
        assert_eq!(r.status(), 400);
        let text = r.text().await.unwrap();
        assert!(
            text.contains("X-Budget-Id") && text.contains("invalid_request_error"),
            "{text}"
        );
    }
    assert_eq!(app.mock.state.messages(), 0);
    assert!(app.usage("default").await.is_empty());
}

/// A virtual key never leaves the proxy: not beside the client's own key, not in another
/// header, not under a lower-case scheme.
#[tokio::test]
async fn a_virtual_key_never_goes_upstream() {
    let app = spawn_with(|s| {
        s.upstream_key = Some(agent_budget::config::Secret::new("sk-ant-real".into()))
    })
    .await;
    let r = app
        .client
        .post(app.url("/api/budgets/default/keys"))
        .json(&json!({"name": "agent"}))
        .send()
        .await
        .unwrap();
    let key = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let bearer = format!("Bearer {key}");
    let lower = format!("bearer {key}");
    for (headers, status) in [
        (
            vec![
                ("x-api-key", &b"sk-ant-mine"[..]),
                ("authorization", bearer.as_bytes()),
            ],
            400,
        ),
        (
            vec![
                ("authorization", bearer.as_bytes()),
                ("authorization", b"Bearer other"),
            ],
            400,
        ),
        (
            vec![("x-api-key", key.as_bytes()), ("x-api-key", key.as_bytes())],
            400,
        ),
        (
            vec![
                ("x-api-key", b"sk-ant-mine"),
                ("x-forwarded-key", key.as_bytes()),
            ],
            200,
        ),
        (vec![("authorization", lower.as_bytes())], 200),
    ] {
        let r = post_with(&app, "/v1/messages", &headers).await;
        assert_eq!(
            r.status(),
            status,
            "{headers:?}: {}",
            r.text().await.unwrap()
        );
    }
    let seen = app.mock.state.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert!(
            !format!("{:?}", s.headers).contains("sk-ab-"),
            "{:?}",
            s.headers
        );
    }
    assert_eq!(
        seen[1].headers["x-api-key"], "sk-ant-real",
        "the lower-case bearer is swapped"
    );
}

/// Encoded separators and dot segments under a forwarded path never reach the upstream with
/// the client's (or the real) key.
#[tokio::test]
async fn encoded_paths_are_refused_not_forwarded() {
    let app = spawn_app().await;
    for path in [
        "/v1/models/..%2F..%2Fv1%2Fmessages%2Fbatches",
        "/v1/models/%2e%2e",
        "/v1/models/a%2Fb",
        "/v1/models/..",
        "/v1/models/%2E%2E%2Fmessages%2Fbatches",
    ] {
        // Raw bytes on the socket: an HTTP client library would normalise the path first.
        let status = raw_get(app.port, &format!("/agent-budget{path}")).await;
        assert!(status == 400 || status == 404, "{path}: {status}");
    }
    assert_eq!(app.mock.state.seen().len(), 0);
    let ok = app
        .client
        .get(app.url("/v1/models/claude-opus-4-8"))
        .header("x-api-key", "sk-test")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// `GET path` written byte for byte; the response's status code.
async fn raw_get(port: u16, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nx-api-key: sk-test\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

/// REST bodies are objects, and money is never rounded on the way in.
#[tokio::test]
async fn rest_bodies_that_are_not_objects_or_round_money_change_nothing() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "x", "max_dollars": "5"}))
        .await;
    let send = |method: &str, path: &str, body: &str| {
        app.client
            .request(method.parse().unwrap(), app.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    for (method, path) in [
        ("PATCH", "/api/budgets/x"),
        ("POST", "/api/budgets"),
        ("PUT", "/api/pricing"),
        ("POST", "/api/budgets/x/keys"),
    ] {
        for body in ["[1,2]", "[\"y\", 1]", "\"x\"", "7"] {
            let r = send(method, path, body).await.unwrap();
            assert_eq!(r.status(), 400, "{method} {path} {body}");
            let text = r.text().await.unwrap();
            assert!(text.contains("must be a JSON object"), "{text}");
        }
    }
    let long = send(
        "PATCH",
        "/api/budgets/x",
        r#"{"max_dollars": 0.10000000000000000555}"#,
    )
    .await
    .unwrap();
    assert_eq!(long.status(), 400);
    assert!(long.text().await.unwrap().contains("decimal strings"));
    let b = app.budget("x").await;
    assert_eq!(
        (&b["max_dollars"], &b["max_tokens"]),
        (&json!("5"), &Value::Null)
    );
    assert!(
        app.get("/api/budgets/x/keys").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let tiny = send("PATCH", "/api/budgets/x", r#"{"max_dollars": 0.000001}"#)
        .await
        .unwrap();
    assert_eq!(tiny.status(), 200, "{}", tiny.text().await.unwrap());
    assert_eq!(app.budget("x").await["max_dollars"], "0.000001");
}
