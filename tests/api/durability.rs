//! Durability of the real binary: `kill -9` loses no record of a delivered response; a restart
//! restores spend and holds no reservation; start-up failures are one clear line.

use crate::helpers::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Proc {
    pub child: Child,
    pub port: u16,
    /// Everything the server wrote to stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

pub fn serve(args: &[&str]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent-budget"));
    cmd.arg("serve").args(args);
    serve_with(cmd)
}

impl Drop for Proc {
    /// A failed test must not leave its server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a command that ends up running `agent-budget serve` and waits until it is ready.
pub fn serve_with(mut cmd: Command) -> Proc {
    if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
        cmd.env("RUST_LOG", "agent_budget=info");
    }
    let mut child = cmd
        .env_remove("PORT")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let port = loop {
        let line = lines
            .next()
            .expect("the server exited before it was ready")
            .unwrap();
        log.lock().unwrap().push_str(&(line.clone() + "\n"));
        if let Some(p) = line.split("ready port=").nth(1) {
            break p.trim().parse().unwrap();
        }
    };
    // Keep reading stderr so the server never blocks on a full pipe.
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            kept.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    Proc { child, port, log }
}

/// A mock upstream, a data directory, and the `serve` arguments that use them. The admin API
/// is open (`--open-admin`): these tests are about accounting, `guards.rs` about signing in.
pub async fn fixture() -> (mock_upstream::Mock, tempfile::TempDir, Vec<String>) {
    let mock = mock_upstream::start(0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--port",
        "0",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--upstream",
        &mock.url(),
        "--no-keychain",
        "--open-admin",
    ]
    .map(String::from)
    .to_vec();
    (mock, dir, args)
}

pub fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}/agent-budget{path}")
}

/// `GET` a JSON document from a server started with `serve`.
pub async fn get_json(client: &reqwest::Client, port: u16, path: &str) -> Value {
    client
        .get(url(port, path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn kill_9_loses_no_delivered_response_and_restart_restores_spend() {
    let (_mock, _dir, args) = fixture().await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = serve(&args);
    let client = reqwest::Client::new();
    let created = client
        .post(url(p.port, "/api/budgets"))
        .json(&json!({"name": "team", "max_dollars": "100"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let mut delivered = 0u64;
    for i in 0..400u64 {
        let mut b = body("claude-sonnet-4-6", 100);
        b["stream"] = json!(i % 2 == 1);
        let script = json!({"usage": {"input_tokens": 1000 + i, "output_tokens": 10}});
        let sent = client
            .post(url(p.port, "/v1/messages"))
            .header("x-budget-id", "team")
            .header("x-mock", script.to_string())
            .json(&b)
            .send()
            .await;
        let complete = match sent {
            Ok(r) if r.status() == 200 => r
                .text()
                .await
                .map(|t| t.contains("end_turn") || t.contains("message_stop"))
                .unwrap_or(false),
            _ => false,
        };
        if complete {
            delivered += 1;
        }
        if i == 25 {
            // Kill while later requests keep coming: some die in flight.
            let pid = p.child.id();
            std::thread::spawn(move || {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            });
        }
        if i > 25 && !complete {
            break;
        }
    }
    let _ = p.child.wait();
    assert!(delivered >= 26, "{delivered}");

    let p2 = serve(&args);
    let budget: Value = client
        .get(url(p2.port, "/api/budgets/team"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let usage: Value = client
        .get(url(p2.port, "/api/budgets/team/usage?limit=500"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let records = usage["total"].as_u64().unwrap();
    assert!(
        records >= delivered,
        "{records} records for {delivered} delivered responses"
    );
    assert!(
        records <= delivered + 1,
        "at most the one in flight was recorded without being delivered"
    );
    let sum: agent_budget::money::Money = usage["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| dollars(&r["cost_dollars"]))
        .sum();
    assert_eq!(
        dollars(&budget["spent_dollars"]),
        sum,
        "restart restores spend exactly"
    );
    assert_eq!(
        budget["reserved_dollars"], "0",
        "no reservation survives a restart"
    );
    assert_eq!(budget["requests"].as_u64(), Some(records));
    let mut p2 = p2;
    let _ = p2.child.kill();
    let _ = p2.child.wait();
}

fn start_error(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agent-budget"))
        .arg("serve")
        .args(args)
        .env_remove("PORT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    (out.status.code().unwrap_or(-1), err)
}

#[tokio::test]
async fn start_up_failures_are_one_clear_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, err) = start_error(&["--port", &port, "--data-dir", &d]);
    assert_eq!(code, 1);
    assert!(
        err.contains("already in use") && err.contains("--port"),
        "{err}"
    );

    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let (code, err) = start_error(&["--port", "0", "--data-dir", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("data directory") && err.contains("--data-dir"),
        "{err}"
    );

    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    std::fs::write(corrupt.join("agent-budget.db"), vec![0x42u8; 8192]).unwrap();
    let (code, err) = start_error(&["--port", "0", "--data-dir", corrupt.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("corrupt"), "{err}");

    // A team database nobody answers on: the cause, and nothing left running.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let db = format!(
        "postgres://agent@127.0.0.1:{}/budgets",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let (code, err) = start_error(&[
        "--port",
        "0",
        "--data-dir",
        &d,
        "--no-keychain",
        "--database",
        &db,
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--database") && err.contains("Connection refused"),
        "{err}"
    );

    for (args, needle) in [
        (vec!["--database", "mysql://x"], "postgres://"),
        (vec!["--lease-secs", "0"], "--lease-secs"),
        (vec!["--bogus"], "--bogus"),
        (vec!["--port", "seventy"], "seventy"),
        (vec!["--host", "0.0.0.0", "--open-admin"], "--open-admin"),
        (vec!["--upstream", "nope"], "--upstream"),
    ] {
        let (code, err) = start_error(&args);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[tokio::test]
async fn sigterm_lets_an_open_stream_finish_and_commits_it() {
    use futures_util::StreamExt;
    let (_mock, _dir, args) = fixture().await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = serve(&args);
    let client = reqwest::Client::new();
    let mut b = body("claude-sonnet-4-6", 100);
    b["stream"] = json!(true);
    let script = json!({"chunk_delay_ms": 100, "usage": {"input_tokens": 10, "output_tokens": 20}, "text": "a b c d e f g h"});
    let resp = client
        .post(url(p.port, "/v1/messages"))
        .header("x-mock", script.to_string())
        .json(&b)
        .send()
        .await
        .unwrap();
    let mut chunks = resp.bytes_stream();
    let first = chunks.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));

    let term = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut rest = Vec::new();
    while let Some(c) = chunks.next().await {
        rest.extend_from_slice(&c.unwrap());
    }
    assert!(
        String::from_utf8_lossy(&rest).contains("message_stop"),
        "the open stream finished"
    );
    let status = p.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    let mut p2 = serve(&args);
    let usage: Value = client
        .get(url(p2.port, "/api/budgets/default/usage"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["total"], 1);
    assert_eq!(
        (
            usage["items"][0]["status"].as_str(),
            usage["items"][0]["estimated"].as_bool()
        ),
        (Some("ok"), Some(false))
    );
    let _ = p2.child.kill();
    let _ = p2.child.wait();
}

#[tokio::test]
async fn an_alert_raised_before_kill_9_is_delivered_exactly_once_after_restart() {
    use crate::receiver::{self, Mode};
    let (_mock, _dir, args) = fixture().await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let hook_port = receiver::free_port();
    let mut p = serve(&args);
    let client = reqwest::Client::new();
    let spec = json!({"name": "team", "max_dollars": "1", "webhook_url": format!("http://127.0.0.1:{hook_port}/hook")});
    client
        .post(url(p.port, "/api/budgets"))
        .json(&spec)
        .send()
        .await
        .unwrap();
    let r = client
        .post(url(p.port, "/v1/messages"))
        .header("x-budget-id", "team")
        .header(
            "x-mock",
            json!({"usage": {"input_tokens": 0, "output_tokens": 120_000}}).to_string(),
        )
        .json(&body("claude-haiku-4-5", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let alerts = |port: u16| {
        let client = client.clone();
        async move {
            let v: Value = client
                .get(url(port, "/api/alerts"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["items"].as_array().unwrap().clone()
        }
    };
    // The receiver is down: the first attempt fails and the alert waits for its retry.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while alerts(p.port)
        .await
        .first()
        .is_none_or(|a| a["deliveries"].as_array().unwrap().is_empty())
    {
        assert!(std::time::Instant::now() < deadline, "no first attempt");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    p.child.kill().unwrap();
    p.child.wait().unwrap();

    let hook = receiver::start_on(hook_port, Mode::Ok).await;
    let mut p2 = serve(&args);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while alerts(p2.port).await[0]["delivery"] != "delivered" {
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered after restart"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let all = alerts(p2.port).await;
    assert_eq!(all.len(), 1, "raised once: {all:?}");
    assert_eq!(hook.count(), 1, "delivered once");
    let _ = p2.child.kill();
    let _ = p2.child.wait();
}
