//! Forwarding: routes, verbatim headers and bodies, exact charging, upstream failures.

use crate::helpers::*;
use serde_json::{Value, json};

#[tokio::test]
async fn forwards_headers_and_body_verbatim_and_adds_budget_headers() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "team", "max_dollars": "10"}))
        .await;
    let raw = br#"{"model":"claude-sonnet-4-6",  "max_tokens":100,"messages":[{"role":"user","content":"Hi \u00e9"}]}"#;
    let resp = app
        .client
        .post(app.url("/v1/messages?beta=true"))
        .header("x-api-key", "sk-ant-secret")
        .header("authorization", "Bearer sk-ant-bearer")
        .header("anthropic-version", "2026-10-21")
        .header("anthropic-beta", "fast-mode-2026-02-01,oauth-2025-04-20")
        .header("x-stainless-retry-count", "0")
        .header("x-budget-id", "team")
        .header("content-type", "application/json")
        .body(raw.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-agent-budget-id"], "team");
    assert_eq!(resp.headers()["x-agent-budget-remaining"], "10");
    assert!(
        resp.headers()["request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_mock")
    );
    let reply: Value = resp.json().await.unwrap();
    assert_eq!(reply["content"][0]["text"], "Hello from the mock upstream.");

    let seen = app.mock.state.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(
        (s.path.as_str(), s.query.as_deref()),
        ("/v1/messages", Some("beta=true"))
    );
    assert_eq!(&s.body[..], &raw[..], "body bytes unchanged");
    for (k, v) in [
        ("x-api-key", "sk-ant-secret"),
        ("authorization", "Bearer sk-ant-bearer"),
        ("anthropic-version", "2026-10-21"),
        ("anthropic-beta", "fast-mode-2026-02-01,oauth-2025-04-20"),
        ("x-stainless-retry-count", "0"),
        ("content-type", "application/json"),
    ] {
        assert_eq!(s.headers[k], v, "{k}");
    }
    assert!(s.headers.get("x-budget-id").is_none());
}

#[tokio::test]
async fn charges_the_exact_cost_from_usage_and_records_it() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "team", "max_dollars": "10", "period": "daily"}))
        .await;
    let usage = json!({"input_tokens": 2048, "cache_creation_input_tokens": 248, "cache_read_input_tokens": 1800,
        "cache_creation": {"ephemeral_5m_input_tokens": 148, "ephemeral_1h_input_tokens": 100}, "output_tokens": 503});
    let r = app
        .send(
            Some("team"),
            &body("claude-opus-4-6", 1000),
            Some(json!({"usage": usage})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let b = app.budget("team").await;
    assert_eq!(b["spent_dollars"], "0.02564");
    assert_eq!(b["spent_tokens"], 2048 + 248 + 1800 + 503);
    assert_eq!(b["reserved_dollars"], "0");
    assert_eq!(
        (b["requests"].as_u64(), b["blocked"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(b["breakdown"][0]["model"], "claude-opus-4-6");
    assert_eq!(b["breakdown"][0]["dollars"], "0.02564");
    let rec = &app.usage("team").await[0];
    assert_eq!(rec["status"], "ok");
    assert_eq!(rec["cost_dollars"], "0.02564");
    assert_eq!(
        (
            rec["cache_write_5m_tokens"].as_u64(),
            rec["cache_write_1h_tokens"].as_u64()
        ),
        (Some(148), Some(100))
    );
    assert_eq!(
        (
            rec["estimated"].as_bool(),
            rec["stream"].as_bool(),
            rec["http_status"].as_u64()
        ),
        (Some(false), Some(false), Some(200))
    );
    assert_eq!(rec["priced_as"], "table");
    assert!(
        rec["upstream_request_id"]
            .as_str()
            .unwrap()
            .starts_with("req_mock")
    );
}

#[tokio::test]
async fn budget_selection_by_path_header_id_and_default() {
    let app = spawn_app().await;
    let team = app
        .create_budget(json!({"name": "team", "max_dollars": "10"}))
        .await;
    let path = app
        .client
        .post(app.url("/b/team/v1/messages"))
        .json(&body("claude-haiku-4-5", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(path.headers()["x-agent-budget-id"], "team");
    let by_id = app
        .send(
            Some(&team["id"].to_string()),
            &body("claude-haiku-4-5", 10),
            None,
        )
        .await;
    assert_eq!(by_id.headers()["x-agent-budget-id"], "team");
    let untagged = app.send(None, &body("claude-haiku-4-5", 10), None).await;
    assert_eq!(untagged.headers()["x-agent-budget-id"], "default");
    assert!(
        untagged.headers().get("x-agent-budget-remaining").is_none(),
        "default is uncapped"
    );
    assert_eq!(app.budget("team").await["requests"], 2);
    assert_eq!(app.budget("default").await["requests"], 1);

    let unknown = app
        .send(Some("nope"), &body("claude-haiku-4-5", 10), None)
        .await;
    assert_eq!(unknown.status(), 404);
    let e: Value = unknown.json().await.unwrap();
    assert_eq!(e["error"]["type"], "not_found_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("budget 'nope' does not exist")
    );
    assert_eq!(
        app.mock.state.messages(),
        3,
        "the unknown budget's request was not forwarded"
    );
}

#[tokio::test]
async fn require_budget_refuses_untagged_requests() {
    let app = spawn_with(|s| s.require_budget = true).await;
    let r = app.send(None, &body("claude-haiku-4-5", 10), None).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Budget-Id")
    );
    assert_eq!(app.mock.state.messages(), 0);
    assert_eq!(
        app.send(Some("default"), &body("claude-haiku-4-5", 10), None)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn free_endpoints_pass_through_and_others_are_refused() {
    let app = spawn_with(|s| s.require_budget = true).await;
    let ct = app
        .client
        .post(app.url("/v1/messages/count_tokens?beta=true"))
        .header("x-mock", r#"{"count": 1234}"#)
        .json(&json!({"model": "claude-sonnet-4-6", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(ct.status(), 200);
    assert_eq!(ct.json::<Value>().await.unwrap()["input_tokens"], 1234);
    let ct_path = app
        .client
        .post(app.url("/b/default/v1/messages/count_tokens"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(ct_path.status(), 200);
    let models: Value = app
        .client
        .get(app.url("/v1/models?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "claude-sonnet-4-6");
    let one = app
        .client
        .get(app.url("/v1/models/claude-sonnet-4-6"))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    assert!(
        app.usage("default").await.is_empty(),
        "free endpoints create no usage record"
    );

    for (method, path) in [
        ("POST", "/v1/messages/batches"),
        ("GET", "/v1/files"),
        ("POST", "/b/default/v1/complete"),
    ] {
        let r = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["type"], "not_found_error");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not proxied")
        );
    }
    assert_eq!(app.mock.state.messages(), 0);
    for path in ["/agent-budget/api/hello", "/api/hello"] {
        let r = app
            .client
            .head(format!("http://127.0.0.1:{}{path}", app.port))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn upstream_errors_pass_through_uncharged() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "team", "max_dollars": "10"}))
        .await;
    let r = app
        .send(
            Some("team"),
            &body("claude-sonnet-4-6", 1000),
            Some(json!({"status": 529, "error_type": "overloaded_error"})),
        )
        .await;
    assert_eq!(r.status(), 529);
    assert!(r.headers().get("request-id").is_some());
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        (e["error"]["type"].as_str(), e["error"]["message"].as_str()),
        (Some("overloaded_error"), Some("scripted error"))
    );
    let b = app.budget("team").await;
    assert_eq!(
        (b["spent_dollars"].as_str(), b["reserved_dollars"].as_str()),
        (Some("0"), Some("0"))
    );
    let rec = &app.usage("team").await[0];
    assert_eq!(
        (
            rec["status"].as_str(),
            rec["http_status"].as_u64(),
            rec["cost_dollars"].as_str()
        ),
        (Some("upstream_error"), Some(529), Some("0"))
    );
}

/// A TLS server on 127.0.0.1 with a self-signed certificate for `localhost`; the flag says
/// whether any client completed a handshake with it.
async fn untrusted_tls_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(
        rustls::crypto::aws_lc_rs::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shook = std::sync::Arc::new(AtomicBool::new(false));
    let flag = shook.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            if acceptor.accept(socket).await.is_ok() {
                flag.store(true, Ordering::SeqCst);
            }
        }
    });
    (port, shook)
}

#[tokio::test]
async fn an_upstream_whose_certificate_is_not_trusted_is_refused() {
    let (port, shook) = untrusted_tls_server().await;
    let app = spawn_with(|s| s.upstream = Some(format!("https://localhost:{port}"))).await;
    let r = app.send(None, &body("claude-sonnet-4-6", 10), None).await;
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.unwrap();
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("certificate"), "{message}");
    assert!(
        !shook.load(std::sync::atomic::Ordering::SeqCst),
        "the proxy completed a TLS handshake with an untrusted server"
    );
    assert_eq!(app.budget("default").await["reserved_dollars"], "0");
}

#[tokio::test]
async fn unreachable_and_slow_upstreams_become_502_and_504() {
    let app = spawn_with(|s| s.upstream = Some("http://127.0.0.1:9".into())).await;
    let r = app.send(None, &body("claude-sonnet-4-6", 10), None).await;
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "api_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot reach the upstream")
    );
    assert_eq!(app.budget("default").await["reserved_dollars"], "0");

    let slow = spawn_with(|s| s.upstream_timeout_secs = Some(1)).await;
    let r = slow
        .send(
            None,
            &body("claude-sonnet-4-6", 10),
            Some(json!({"delay_ms": 3000})),
        )
        .await;
    assert_eq!(r.status(), 504);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "timeout_error");
    let rec = &slow.usage("default").await[0];
    assert_eq!(
        (rec["status"].as_str(), rec["http_status"].as_u64()),
        (Some("upstream_error"), Some(504))
    );
    assert_eq!(slow.budget("default").await["reserved_dollars"], "0");
}

#[tokio::test]
async fn bad_requests_are_refused_and_nothing_is_forwarded_or_written() {
    let app = spawn_app().await;
    let post = |b: Vec<u8>| {
        app.client
            .post(app.url("/v1/messages"))
            .header("content-type", "application/json")
            .body(b)
            .send()
    };
    for (raw, needle) in [
        (b"{\"model\": \"x\", ".to_vec(), "not valid JSON"),
        (br#"{"max_tokens": 10, "messages": []}"#.to_vec(), "'model'"),
        (
            br#"{"model": "claude-sonnet-4-6", "messages": []}"#.to_vec(),
            "'max_tokens'",
        ),
        (
            br#"{"model": "claude-sonnet-4-6", "max_tokens": "many"}"#.to_vec(),
            "'max_tokens'",
        ),
    ] {
        let r = post(raw).await.unwrap();
        assert_eq!(r.status(), 400);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["type"], "error");
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(needle),
            "{e}"
        );
    }
    let huge = vec![b' '; 33 * 1024 * 1024];
    let r = post(huge).await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "request_too_large"
    );
    assert_eq!(app.mock.state.messages(), 0);
    assert!(app.usage("default").await.is_empty());

    // A 5 MB request passes.
    let text = "lorem ipsum ".repeat(5 * 1024 * 1024 / 12);
    let big = json!({"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": text}]});
    assert_eq!(app.send(None, &big, None).await.status(), 200);
    assert_eq!(
        app.mock.state.seen()[0].body.len(),
        serde_json::to_vec(&big).unwrap().len()
    );
}

#[tokio::test]
async fn unpriced_models_are_charged_at_the_dearest_rates() {
    let app = spawn_app().await;
    let r = app
        .send(
            None,
            &body("claude-future-9", 10),
            Some(json!({"usage": {"input_tokens": 1000, "output_tokens": 1000}})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let rec = &app.usage("default").await[0];
    assert_eq!(
        (rec["priced_as"].as_str(), rec["cost_dollars"].as_str()),
        (Some("fallback"), Some("0.09"))
    );
}
