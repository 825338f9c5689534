//! When the database cannot be written: requests already forwarded are answered and their
//! records kept and written later; new requests are refused (fail closed) until saving works
//! again, unless the user chose `--fail-open`. Nothing is lost either way.

use crate::helpers::*;
use agent_budget::money::Money;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

/// Another process holding the database's write lock until it is dropped.
struct Lock(Child);

impl Lock {
    fn take(db: &std::path::Path) -> Lock {
        let mut child = Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys\n\
                 c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
                 c.execute('BEGIN EXCLUSIVE')\n\
                 print('locked', flush=True)\n\
                 sys.stdin.read()",
            ])
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        Lock(child)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.0.stdin.take().map(|mut s| s.flush());
        let _ = self.0.wait();
    }
}

fn dollars(s: &str) -> Money {
    Money::parse(s).unwrap()
}

async fn health(app: &TestApp) -> (u16, Value) {
    let r = app.client.get(app.url("/health")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn spent(app: &TestApp) -> String {
    app.budget("default").await["spent_dollars"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Locks the app's database from another process and sends one request, which was forwarded
/// before anyone knew: it is answered once its commit gives up (busy timeout, 5 s). Returns
/// the lock once `/health` reports the failure.
async fn lock_and_send(app: &TestApp) -> Lock {
    let lock = Lock::take(&app.dir.path().join("agent-budget.db"));
    let a = app.send(None, &body("claude-sonnet-4-6", 100), None).await;
    assert_eq!(a.status(), 200);
    app.eventually("health reports the failure", || async {
        health(app).await.0 == 503
    })
    .await;
    lock
}

#[tokio::test]
async fn a_locked_database_fails_closed_and_loses_no_record() {
    let app = spawn_app().await;
    let lock = lock_and_send(&app).await;
    let (_, h) = health(&app).await;
    assert!(h["database"].as_str().unwrap().contains("locked"), "{h}");

    // Now refused before reaching the upstream, with a reason and the way out.
    let b = app.send(None, &body("claude-sonnet-4-6", 100), None).await;
    assert_eq!(b.status(), 503);
    let err: Value = b.json().await.unwrap();
    assert_eq!(err["error"]["type"], "api_error");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("cannot be saved") && msg.contains("--fail-open"),
        "{msg}"
    );
    assert_eq!(app.mock.state.messages(), 1);

    drop(lock);
    app.eventually("saving works again", || async {
        health(&app).await.0 == 200
    })
    .await;
    let c = app.send(None, &body("claude-sonnet-4-6", 100), None).await;
    assert_eq!(c.status(), 200);
    // The record of A was kept and written once the lock was gone.
    let usage = app.usage("default").await;
    assert_eq!(usage.len(), 2, "{usage:?}");
    assert!(usage.iter().all(|u| u["status"] == "ok"));
    let total = usage
        .iter()
        .map(|u| dollars(u["cost_dollars"].as_str().unwrap()))
        .fold(Money::ZERO, Money::saturating_add);
    assert_eq!(dollars(&spent(&app).await), total);
}

#[tokio::test]
async fn with_fail_open_requests_keep_flowing_and_are_saved_later() {
    let app = spawn_with(|s| s.fail_open = true).await;
    let lock = lock_and_send(&app).await;
    let b = app.send(None, &body("claude-sonnet-4-6", 100), None).await;
    assert_eq!(b.status(), 200);
    assert_eq!(app.mock.state.messages(), 2);
    drop(lock);
    app.eventually("saving works again", || async {
        health(&app).await.0 == 200
    })
    .await;
    assert_eq!(app.usage("default").await.len(), 2);
}

/// Polls for a file another process creates (bounded).
async fn appears(path: &std::path::Path) {
    for _ in 0..500 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test]
async fn a_full_disk_fails_closed_and_loses_no_record() {
    file_system_fault(
        r#"dd if=/dev/zero of="$D/filler" bs=4k 2>/dev/null || true"#,
        r#"rm -f "$D/filler""#,
        "full",
    )
    .await;
}

/// The real binary on a 1 MB file system of its own (tmpfs in a private mount namespace);
/// on cue a helper inside the namespace runs `fault` (with `$D` the data directory), and
/// later `undo`. The refusal's message must contain `expect`.
async fn file_system_fault(fault: &str, undo: &str, expect: &str) {
    use crate::durability::{fixture, get_json, serve_with, url};
    let (mock, dir, args) = fixture().await;
    let cues = tempfile::tempdir().unwrap();
    let script = format!(
        r#"set -e
D=$1; T=$2; shift 2
mount -t tmpfs -o size=1m tmpfs "$D"
(
  while [ ! -e "$T/fill" ]; do sleep 0.02; done
  {fault}
  touch "$T/filled"
  while [ ! -e "$T/free" ]; do sleep 0.02; done
  {undo}
  touch "$T/freed"
) &
exec "$@""#
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        &script,
        "sh",
    ])
    .arg(dir.path())
    .arg(cues.path())
    .arg(env!("CARGO_BIN_EXE_agent-budget"))
    .arg("serve")
    .args(&args);
    let p = serve_with(cmd);
    let client = reqwest::Client::new();
    let send = || {
        client
            .post(url(p.port, "/v1/messages"))
            .header("x-api-key", "sk-test")
            .json(&body("claude-sonnet-4-6", 100))
            .send()
    };
    let mut answered = 0;
    for _ in 0..5 {
        assert_eq!(send().await.unwrap().status(), 200);
        answered += 1;
    }

    std::fs::write(cues.path().join("fill"), "").unwrap();
    appears(&cues.path().join("filled")).await;
    // The WAL reuses its space for a while; it must grow (and fail) within a few hundred.
    let mut refused = None;
    for _ in 0..3000 {
        let r = send().await.unwrap();
        match r.status().as_u16() {
            200 => answered += 1,
            503 => {
                refused = Some(r.json::<Value>().await.unwrap());
                break;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    let refused = refused.expect("the full disk was never noticed");
    let msg = refused["error"]["message"].as_str().unwrap();
    assert!(msg.contains(expect), "{msg}");
    assert_eq!(
        mock.state.messages(),
        answered,
        "a refused request reached the upstream"
    );

    std::fs::write(cues.path().join("free"), "").unwrap();
    appears(&cues.path().join("freed")).await;
    let mut healthy = false;
    for _ in 0..500 {
        let h = client.get(url(p.port, "/health")).send().await.unwrap();
        if h.status() == 200 {
            healthy = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(healthy, "saving never resumed after space was freed");
    assert_eq!(send().await.unwrap().status(), 200);
    answered += 1;

    // Every answered request has its record, and the totals agree.
    let page = get_json(&client, p.port, "/api/budgets/default/usage?limit=1").await;
    assert_eq!(page["total"], answered, "{page}");
}

/// Upstream faults the client cannot see coming: each is relayed as it is, charged as
/// `estimated` from what was seen (or the whole reservation when nothing can be read), and
/// leaves no reservation behind.
async fn last_record(app: &TestApp) -> Value {
    app.usage("default").await[0].clone()
}

async fn reserved(app: &TestApp) -> String {
    app.budget("default").await["reserved_dollars"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A stream through a proxy whose upstream timeout is 1 s, the mock following `script`: the
/// app, the text the client received, and how long it took.
async fn stream_with_a_1s_timeout(script: Value) -> (TestApp, String, std::time::Duration) {
    let app = spawn_with(|s| s.upstream_timeout_secs = Some(1)).await;
    let mut b = body("claude-sonnet-4-6", 1000);
    b["stream"] = serde_json::json!(true);
    let started = std::time::Instant::now();
    let r = app.send(None, &b, Some(script)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    (app, text, started.elapsed())
}

#[tokio::test]
async fn a_stream_that_stalls_ends_with_an_error_event_after_the_timeout() {
    let (app, text, waited) =
        stream_with_a_1s_timeout(serde_json::json!({"hang_after": 3, "text": "one two three"}))
            .await;
    assert!(
        waited >= std::time::Duration::from_secs(1) && waited < std::time::Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(text.starts_with("event: message_start"), "{text}");
    assert!(
        text.trim_end().ends_with("before the message finished\"}}"),
        "{text}"
    );
    let rec = last_record(&app).await;
    assert_eq!(
        (rec["status"].as_str(), rec["estimated"].as_bool()),
        (Some("upstream_error"), Some(true)),
        "{rec}"
    );
    assert_eq!(reserved(&app).await, "0");
}

#[tokio::test]
async fn a_stream_longer_than_the_timeout_is_not_cut_while_events_keep_coming() {
    // Events 400 ms apart: the stream lasts about 4 s, each silence is under the 1 s timeout.
    let (app, text, took) = stream_with_a_1s_timeout(
        serde_json::json!({"chunk_delay_ms": 400, "text": "one two three four five"}),
    )
    .await;
    assert!(took > std::time::Duration::from_secs(2), "{took:?}");
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(!text.contains("before the message finished"), "{text}");
    let rec = last_record(&app).await;
    assert_eq!(
        (rec["status"].as_str(), rec["estimated"].as_bool()),
        (Some("ok"), Some(false)),
        "{rec}"
    );
}

#[tokio::test]
async fn invalid_json_in_a_200_is_relayed_and_charged_the_whole_reservation() {
    let app = spawn_app().await;
    let raw = "{\"id\": \"msg_1\", \"usage\": {\"input_tokens\": 5, ";
    let r = app
        .send(
            None,
            &body("claude-sonnet-4-6", 1000),
            Some(serde_json::json!({"raw": raw})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), raw);
    let rec = last_record(&app).await;
    assert_eq!(rec["estimated"], true, "{rec}");
    let cost = dollars(rec["cost_dollars"].as_str().unwrap());
    // 1,000 output tokens at $15/MTok alone are $0.015; the reservation covers more.
    assert!(cost >= dollars("0.015"), "{rec}");
    assert_eq!(reserved(&app).await, "0");
}

#[tokio::test]
async fn invalid_sse_is_relayed_verbatim_then_told_broken_and_charged_the_whole_reservation() {
    let app = spawn_app().await;
    let mut b = body("claude-sonnet-4-6", 1000);
    b["stream"] = serde_json::json!(true);
    let raw = "event: message_start\ndata: {not json\n\n\u{0}\u{1}garbage without a newline";
    let r = app
        .send(
            None,
            &b,
            Some(serde_json::json!({"raw": raw, "content_type": "text/event-stream"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.starts_with(raw), "{text}");
    assert!(text.contains("event: error"), "{text}");
    let rec = last_record(&app).await;
    assert_eq!(
        (rec["status"].as_str(), rec["estimated"].as_bool()),
        (Some("upstream_error"), Some(true)),
        "{rec}"
    );
    let cost = dollars(rec["cost_dollars"].as_str().unwrap());
    assert!(cost >= dollars("0.015"), "{rec}");
    assert_eq!(reserved(&app).await, "0");
}

#[tokio::test]
async fn an_upstream_redirect_is_relayed_not_followed() {
    let app = spawn_app().await;
    let elsewhere = mock_upstream::start(0).await.unwrap();
    let location = format!("{}/v1/messages", elsewhere.url());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .post(app.url("/v1/messages"))
        .header("x-api-key", "sk-ant-must-stay-here")
        .header(
            "x-mock",
            serde_json::json!({"status": 307, "location": location}).to_string(),
        )
        .json(&body("claude-sonnet-4-6", 100))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(r.headers()["location"], location.as_str());
    assert_eq!(
        elsewhere.state.messages(),
        0,
        "the proxy followed the redirect"
    );
    assert_eq!(reserved(&app).await, "0");
}
