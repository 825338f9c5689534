//! Bounded under load (round two): idle and slow connections cannot starve real requests,
//! and the connections beyond the cap are refused at once.

use crate::helpers::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).await.unwrap()
}

/// Reads until the server closes the connection; what it sent.
async fn until_closed(tcp: &mut TcpStream, what: &str) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), tcp.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the server never closed {what}: {}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

async fn real_request(app: &TestApp) -> u16 {
    app.send(None, &body("claude-haiku-4-5", 10), None)
        .await
        .status()
        .as_u16()
}

/// 1,100 idle connections used to exhaust the 1,024 open files and time every request out.
#[tokio::test]
async fn a_real_request_succeeds_while_1100_idle_connections_are_open_and_they_are_closed() {
    let app = spawn_with(|s| s.idle_timeout_secs = Some(2)).await;
    let mut idle = Vec::new();
    for _ in 0..1100 {
        idle.push(connect(app.port).await);
    }
    assert_eq!(real_request(&app).await, 200);
    for tcp in &mut idle {
        assert_eq!(
            until_closed(tcp, "an idle connection").await,
            "",
            "an idle connection is closed, unanswered"
        );
    }
    // A kept-alive connection idle after its request is closed too.
    let mut kept = connect(app.port).await;
    kept.write_all(b"GET /agent-budget/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut kept, "a kept-alive connection").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_slow_header_trickle_is_cut_off_and_a_real_request_gets_through_meanwhile() {
    let app = spawn_with(|s| s.idle_timeout_secs = Some(1)).await;
    let mut slow = connect(app.port).await;
    slow.write_all(b"POST /agent-budget/v1/messages HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    assert_eq!(real_request(&app).await, 200);
    // A header byte every 100 ms never completes the head; the server hangs up.
    let mut sent = 0;
    let closed = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow.write_all(b"x").await.is_err() {
            break true;
        }
        sent += 1;
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => break true, // an error response, then the close
            Err(_) if sent < 600 => continue,
            Err(_) => break false,
        }
    };
    assert!(closed, "a trickle of header bytes kept the connection open");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_at_once_and_room_comes_back() {
    let app = spawn_with(|s| {
        s.max_connections = Some(20);
        s.idle_timeout_secs = Some(300);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect(app.port).await);
    }
    let mut extra = connect(app.port).await;
    let answer = until_closed(&mut extra, "a connection over the cap").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("--max-connections"), "{answer}");
    drop(held);
    app.eventually("a slot to be free again", || async {
        real_request(&app).await == 200
    })
    .await;
}

/// The server process's peak resident memory (VmHWM), in MiB.
fn peak_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kb / 1024
}

/// Memory per request is bounded (docs/RELIABILITY.md): a 30 MB body of a million small
/// blocks that admission sizes with `count_tokens` (it used to be parsed into a tree of
/// 765 MiB), and a 300 MB non-streamed response (it used to be buffered whole).
#[tokio::test]
async fn a_huge_body_or_response_does_not_take_memory_in_proportion() {
    use crate::durability::{fixture, serve, url};
    let (mock, _dir, args) = fixture().await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = serve(&args);
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = c
        .post(url(p.port, "/api/budgets"))
        .json(&serde_json::json!({"name": "capped", "max_dollars": "20"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let before = peak_mib(p.child.id());

    let block = r#"{"type":"text","text":"hi"},"#;
    let blocks = block.repeat(30_000_000 / block.len());
    let big = format!(
        r#"{{"model":"claude-sonnet-4-6","max_tokens":10,"messages":[{{"role":"user","content":[{}{{"type":"text","text":"end"}}]}}]}}"#,
        blocks
    );
    let r = c
        .post(url(p.port, "/v1/messages"))
        .header("x-api-key", "sk-test")
        .header("x-budget-id", "capped")
        .header("x-mock", r#"{"count": 1000}"#)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        mock.state
            .count_tokens
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "admission asked count_tokens"
    );
    let after_body = peak_mib(p.child.id());
    // The body itself is 30 MB and is held twice (as received, and the copy sent to
    // count_tokens).
    assert!(
        after_body - before < 200,
        "a 30 MB body raised the peak from {before} to {after_body} MiB"
    );

    let r = c
        .post(url(p.port, "/v1/messages"))
        .header("x-api-key", "sk-test")
        .header("x-mock", r#"{"pad_bytes": 300000000}"#)
        .json(&body("claude-sonnet-4-6", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("larger than"));
    let after_response = peak_mib(p.child.id());
    // The response is read up to 32 MiB.
    assert!(
        after_response < after_body + 100,
        "a 300 MB response raised the peak from {after_body} to {after_response} MiB"
    );
    eprintln!(
        "peak RSS (MiB): at start {before}, after the body {after_body}, after the response {after_response}"
    );
    let rec: serde_json::Value = c
        .get(url(p.port, "/api/budgets/default/usage"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        rec["items"][0]["estimated"], true,
        "the oversized reply is charged its reservation"
    );
}
