//! Under load: a soak of concurrent streams (no leak of memory, file descriptors,
//! reservations or records) and SIGTERM with 200 streams open (nothing lost).
//!
//! The soak runs briefly in CI; `SOAK_STREAMS=1000 SOAK_SECS=60` makes it the long run
//! recorded in docs/RELIABILITY.md (see there for the command).

use crate::durability::{fixture, get_json, serve};
use crate::helpers::body;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory (MiB) and open file descriptors of a process.
fn footprint(pid: u32) -> (f64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (kb / 1024.0, fds)
}

fn stream_body() -> Value {
    let mut b = body("claude-sonnet-4-6", 100);
    b["stream"] = json!(true);
    b
}

/// Reads a stream to its end; true if the message finished.
async fn finish(r: reqwest::Response) -> (bool, String) {
    let mut text = Vec::new();
    let mut chunks = r.bytes_stream();
    while let Some(Ok(c)) = chunks.next().await {
        text.extend_from_slice(&c);
    }
    let text = String::from_utf8_lossy(&text).into_owned();
    (text.contains("event: message_stop"), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_of_concurrent_streams_leaks_nothing() {
    let (streams, secs) = (env("SOAK_STREAMS", 200), env("SOAK_SECS", 5));
    let (mock, _dir, args) = fixture().await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = serve(&args);
    let pid = p.child.id();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(streams as usize)
        .build()
        .unwrap();
    let target = crate::durability::url(p.port, "/v1/messages");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (completed, broken) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // Each stream: 13 events 50 ms apart, about 0.6 s.
    let script = json!({"chunk_delay_ms": 50, "text": "one two three four five six seven eight"});
    let workers: Vec<_> = (0..streams)
        .map(|_| {
            let (client, target, script) = (client.clone(), target.clone(), script.to_string());
            let (completed, broken) = (completed.clone(), broken.clone());
            tokio::spawn(async move {
                // At least one stream each, however slow the machine: the count below does
                // not depend on the clock.
                loop {
                    let r = client
                        .post(&target)
                        .header("x-mock", &script)
                        .json(&stream_body())
                        .send()
                        .await;
                    let done = match r {
                        Ok(r) => finish(r).await.0,
                        Err(_) => false,
                    };
                    let n = if done { &completed } else { &broken };
                    n.fetch_add(1, Ordering::Relaxed);
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            })
        })
        .collect();
    let mut samples = Vec::new();
    let started = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        samples.push((started.elapsed().as_secs_f64(), footprint(pid)));
    }
    for w in workers {
        w.await.unwrap();
    }
    let end = footprint(pid);
    eprintln!("soak: {streams} streams for {secs} s; time s, RSS MiB, open fds:");
    for (t, (rss, fds)) in &samples {
        eprintln!("  {t:6.1}  {rss:7.1}  {fds}");
    }
    let (completed, broken) = (
        completed.load(Ordering::Relaxed),
        broken.load(Ordering::Relaxed),
    );
    eprintln!(
        "  completed {completed}, broken {broken}; at the end {:.1} MiB, {} fds",
        end.0, end.1
    );

    assert_eq!(broken, 0);
    assert!(
        completed >= streams,
        "each worker finishes at least one stream: {completed}"
    );
    // Every stream has its record, nothing is held, the upstream saw each request once.
    let budget = get_json(&client, p.port, "/api/budgets/default").await;
    assert_eq!(budget["reserved_dollars"], "0");
    let usage = get_json(&client, p.port, "/api/budgets/default/usage?limit=1").await;
    assert_eq!(usage["total"], completed);
    assert_eq!(mock.state.messages(), completed);
    // Memory is flat: the second half of the run holds no more than the first (with some
    // slack for the allocator), and descriptors stay within the connections open.
    let half = samples.len() / 2;
    let peak = |s: &[(f64, (f64, usize))]| s.iter().map(|x| x.1.0).fold(0.0, f64::max);
    let (first, second) = (peak(&samples[..half]), peak(&samples[half..]));
    assert!(
        second <= first * 1.15 + 4.0,
        "RSS grew from {first:.1} to {second:.1} MiB"
    );
    let fds = |s: &[(f64, (f64, usize))]| s.iter().map(|x| x.1.1).max().unwrap_or(0);
    let (early, late) = (fds(&samples[..half]), fds(&samples[half..]));
    assert!(
        late <= early + 16,
        "descriptors grew from {early} to {late}"
    );
    assert!(
        late <= 3 * streams as usize + 64,
        "{late} fds for {streams} streams"
    );
    drop(client);
    let mut after = end.1;
    for _ in 0..200 {
        after = footprint(pid).1;
        if after + streams as usize <= late + 64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The clients' connections are closed (the idle upstream pool may stay).
    assert!(
        after + streams as usize <= late + 64,
        "{after} fds after the clients left (from {late})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_200_streams_open_loses_nothing() {
    let (mock, _dir, mut args) = fixture().await;
    args.extend(["--shutdown-grace".to_string(), "2".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = serve(&args);
    let client = reqwest::Client::new();
    let target = crate::durability::url(p.port, "/v1/messages");
    // Half finish within the grace period (13 events 100 ms apart), half cannot (600 ms apart).
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let delay = if i % 2 == 0 { 100 } else { 600 };
            let script =
                json!({"chunk_delay_ms": delay, "text": "one two three four five six seven eight"});
            let req = client
                .post(&target)
                .header("x-mock", script.to_string())
                .json(&stream_body());
            tokio::spawn(async move { finish(req.send().await.unwrap()).await })
        })
        .collect();
    // Every request has reached the upstream; a short one may already be done on a slow
    // machine, the long ones are all still open.
    for _ in 0..400 {
        if mock.state.messages() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(mock.state.messages(), 200);
    let open = mock.state.open_streams.load(Ordering::SeqCst);
    assert!(open >= 100, "only {open} streams open");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let (mut finished, mut told) = (0, 0);
    for t in tasks {
        let (done, text) = t.await.unwrap();
        if done {
            finished += 1;
        } else {
            assert!(text.contains("the proxy is shutting down"), "{text}");
            told += 1;
        }
    }
    assert_eq!(p.child.wait().unwrap().code(), Some(0));
    assert!(
        finished >= 100 && told >= 1,
        "finished {finished}, cut {told}"
    );

    // After a restart: one record per stream, the cut ones charged as aborted estimates.
    let p2 = serve(&args);
    let usage = get_json(&client, p2.port, "/api/budgets/default/usage?limit=500").await;
    assert_eq!(usage["total"], 200);
    let items = usage["items"].as_array().unwrap();
    let ok = items.iter().filter(|u| u["status"] == "ok").count();
    let cut: Vec<_> = items
        .iter()
        .filter(|u| u["status"] == "client_aborted")
        .collect();
    assert_eq!((ok, cut.len()), (finished, told));
    assert!(cut.iter().all(|u| u["estimated"] == true));
    let budget = get_json(&client, p2.port, "/api/budgets/default").await;
    assert_eq!(budget["reserved_dollars"], "0");
    assert_eq!(mock.state.messages(), 200);
}
