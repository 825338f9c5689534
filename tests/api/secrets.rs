//! No API key, authorization header, admin token, webhook URL or secret, or prompt text ever
//! reaches the logs: a full run of the real binary at the most verbose log level, searched.

use crate::durability::{fixture, serve_with, url};
use crate::helpers::body;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::process::Command;

#[tokio::test]
async fn no_key_token_secret_or_prompt_text_reaches_the_logs() {
    let (mock, dir, mut args) = fixture().await;
    let admin = "ADMIN-5ecret-token-0123456789";
    let real = "sk-ant-REAL-5ecret";
    let key_file = dir.path().join("upstream-key");
    std::fs::write(&key_file, real).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    args.extend(["--admin-token".to_string(), admin.to_string()]);
    args.extend([
        "--upstream-key-file".to_string(),
        key_file.to_str().unwrap().to_string(),
    ]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent-budget"));
    cmd.arg("serve").args(&args).env("RUST_LOG", "trace");
    let mut p = serve_with(cmd);
    let (key, bearer, prompt) = (
        "sk-ant-api03-KEY-5ecret",
        "BEARER-5ecret",
        "PROMPT-5ecret: the launch codes",
    );
    // A webhook URL carries its own token (Slack, Discord); nothing listens on port 9.
    let hook = "http://127.0.0.1:9/services/HOOK-5ecret";
    let c = reqwest::Client::new();
    let api = |m: reqwest::Method, path: &str| c.request(m, url(p.port, path)).bearer_auth(admin);
    let created = api(reqwest::Method::POST, "/api/budgets")
        .json(&json!({"name": "team", "max_dollars": "0.002", "webhook_url": hook}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let mut b = body("claude-sonnet-4-6", 10);
    b["messages"][0]["content"] = json!(prompt);
    b["system"] = json!(prompt);
    let send = |path: &str, b: &Value, script: Value| {
        c.post(url(p.port, path))
            .header("x-api-key", key)
            .header("authorization", format!("Bearer {bearer}"))
            .header("x-budget-id", "team")
            .header("x-mock", script.to_string())
            .json(b)
            .send()
    };
    // Priced, streamed, upstream error, free endpoints, refused JSON, over the cap.
    assert_eq!(
        send(
            "/v1/messages",
            &b,
            json!({"usage": {"input_tokens": 400, "output_tokens": 10}})
        )
        .await
        .unwrap()
        .status(),
        200
    );
    let mut s = b.clone();
    s["stream"] = json!(true);
    let streamed = send("/v1/messages", &s, json!({})).await.unwrap();
    assert_eq!(streamed.status(), 200);
    let mut chunks = streamed.bytes_stream();
    while chunks.next().await.is_some() {}
    let failed = send("/v1/messages", &b, json!({"status": 500}))
        .await
        .unwrap();
    assert_eq!(failed.status(), 500);
    assert_eq!(
        send("/v1/messages/count_tokens", &b, json!({}))
            .await
            .unwrap()
            .status(),
        200
    );
    let bad = c
        .post(url(p.port, "/v1/messages"))
        .header("x-api-key", key)
        .body(format!(
            "{{\"model\": \"{prompt}\", \"max_tokens\": \"{prompt}\""
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let mut over = b.clone();
    over["max_tokens"] = json!(100_000);
    assert_eq!(
        send("/v1/messages", &over, json!({}))
            .await
            .unwrap()
            .status(),
        429
    );
    // A virtual key, made and used: forwarded with the real key.
    let made: Value = api(reqwest::Method::POST, "/api/budgets/team/keys")
        .json(&json!({"name": "laptop"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let virtual_key = made["key"].as_str().unwrap().to_string();
    let small = body("claude-haiku-4-5", 10);
    let r = c
        .post(url(p.port, "/v1/messages"))
        .header("x-api-key", &virtual_key)
        .json(&small)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The alerts' webhook deliveries fail (and are logged) before we look.
    for _ in 0..500 {
        let alerts: Value = api(reqwest::Method::GET, "/api/alerts")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let tried = alerts["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| !a["deliveries"].as_array().unwrap().is_empty());
        if tried {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(mock.state.messages() >= 3);

    let _ = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status();
    let _ = p.child.wait();
    let log = p.log.lock().unwrap().clone();
    let webhook_secret = std::fs::read_to_string(dir.path().join("webhook-secret")).unwrap();
    // The capture works and is verbose: requests and webhook attempts are in it.
    assert!(log.contains("TRACE") && log.contains("webhook"), "{log}");
    for secret in [
        key,
        bearer,
        admin,
        real,
        virtual_key.as_str(),
        "PROMPT-5ecret",
        "HOOK-5ecret",
        webhook_secret.trim(),
    ] {
        assert!(!log.contains(secret), "{secret:?} is in the log");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_and_its_files_are_private_to_the_user() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("new").join("agent-budget");
    let mock = mock_upstream::start(0).await.unwrap();
    let app = crate::helpers::start_on(mock, parent, |s| s.data_dir = Some(data.clone())).await;
    assert_eq!(
        app.send(None, &body("claude-sonnet-4-6", 10), None)
            .await
            .status(),
        200
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for f in [
        "agent-budget.db",
        "agent-budget.db-wal",
        "agent-budget.db-shm",
        "webhook-secret",
        "admin-token",
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
}
