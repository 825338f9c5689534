//! Load generation: open-loop at a fixed rate (requests are sent on schedule whatever the
//! responses do), closed-loop saturation, and streaming timings.

use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(4096)
        .build()
        .unwrap_or_default()
}

pub const BODY: &str = r#"{"model":"claude-sonnet-4-6","max_tokens":1024,"messages":[{"role":"user","content":"Write a haiku about budgets."}]}"#;
pub const STREAM_BODY: &str = r#"{"model":"claude-sonnet-4-6","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"Write a haiku about budgets."}]}"#;

/// The API key every request carries: the client's own (`sk-bench`), or with `--keyed` a
/// virtual key of a capped budget.
pub static API_KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// With `--sessions`, each request names one of 8 Claude Code sessions and one of 4 agents in
/// it, so the writer rolls sessions and agents up as it does for Claude Code.
pub static SESSIONS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One request; whether it succeeded and its body arrived whole.
pub async fn one(client: &reqwest::Client, url: &str, body: &'static str, script: &str) -> bool {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    const IDS: [&str; 8] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"];
    let key = API_KEY.get().map_or("sk-bench", String::as_str);
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("x-mock", script);
    if SESSIONS.load(Relaxed) {
        let n = NEXT.fetch_add(1, Relaxed);
        req = req
            .header("x-claude-code-session-id", IDS[n % 8])
            .header("x-claude-code-agent-id", IDS[(n / 8) % 4]);
    }
    let sent = req.body(body).send().await;
    match sent {
        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
        _ => false,
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

pub fn percentiles(mut v: Vec<f64>) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: v[v.len() - 1],
    }
}

pub struct RateRun {
    pub latency: Percentiles,
    pub errors: usize,
    pub achieved_rps: f64,
}

/// Sends `rate` requests per second for `secs` seconds, open loop, evenly spaced. A thread of
/// its own paces them: the runtime's timer ticks once a millisecond, so pacing with it would
/// send 2,000 req/s as pairs every millisecond, and 5,000 as bursts of five.
pub async fn at_rate(client: &reqwest::Client, url: &str, rate: u32, secs: f64) -> RateRun {
    let n = (f64::from(rate) * secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let lat = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now() + Duration::from_millis(20);
    let runtime = tokio::runtime::Handle::current();
    let (client, url) = (client.clone(), url.to_string());
    let (l, e) = (lat.clone(), errors.clone());
    let pacer = tokio::task::spawn_blocking(move || {
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let due = start + interval * i as u32;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let (client, url, lat, errors) = (client.clone(), url.clone(), l.clone(), e.clone());
            tasks.push(runtime.spawn(async move {
                // Timed from the actual send, so the pacer's own wake-up is not counted.
                // Open loop: no request waits for another's response.
                let sent = Instant::now();
                let ok = one(&client, &url, BODY, "{}").await;
                let us = sent.elapsed().as_secs_f64() * 1e6;
                if ok {
                    lat.lock().await.push(us);
                } else {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }));
        }
        tasks
    });
    for t in pacer.await.unwrap_or_default() {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let v = std::mem::take(&mut *lat.lock().await);
    RateRun {
        achieved_rps: v.len() as f64 / elapsed,
        latency: percentiles(v),
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// Both URLs at `rate` for `secs`, for a side-by-side row; with `warm`, a second at the rate
/// first on each, so both client pools hold the connections the rate needs.
pub async fn rate_pair(
    client: &reqwest::Client,
    direct: &str,
    via: &str,
    rate: u32,
    secs: f64,
    warm: bool,
) -> (RateRun, RateRun) {
    if warm {
        at_rate(client, direct, rate, 1.0).await;
        at_rate(client, via, rate, 1.0).await;
    }
    let d = at_rate(client, direct, rate, secs).await;
    (d, at_rate(client, via, rate, secs).await)
}

/// Both URLs one request at a time, `n` each after 300 to warm up, for a side-by-side row.
pub async fn sequential_pair(
    client: &reqwest::Client,
    direct: &str,
    via: &str,
    n: usize,
) -> (Percentiles, Percentiles) {
    sequential(client, direct, 300).await;
    sequential(client, via, 300).await;
    let d = sequential(client, direct, n).await;
    (d, sequential(client, via, n).await)
}

/// One request at a time for `n` requests.
pub async fn sequential(client: &reqwest::Client, url: &str, n: usize) -> Percentiles {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        if one(client, url, BODY, "{}").await {
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    percentiles(v)
}

/// Saturation throughput of both URLs, 64 in flight, in one-second turns (at least three
/// each, `secs` in all per URL): the medians. Taking turns keeps a shared VM's slow spells
/// from landing on one side only, which made single back-to-back runs differ by ±30 %.
pub async fn saturate_pair(
    client: &reqwest::Client,
    direct: &str,
    via: &str,
    via_pid: u32,
    secs: f64,
) -> Saturation {
    let turns = (secs.round() as usize).max(3);
    let (mut d, mut v) = (Vec::new(), Vec::new());
    let (mut ticks, mut requests) = (0, 0);
    for _ in 0..turns {
        d.push(saturate(client, direct, 64, 1.0).await.per_sec);
        let before = crate::procs::cpu_ticks(via_pid);
        let turn = saturate(client, via, 64, 1.0).await;
        ticks += crate::procs::cpu_ticks(via_pid).saturating_sub(before);
        requests += turn.requests;
        v.push(turn.per_sec);
    }
    let median = |mut x: Vec<f64>| {
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    Saturation {
        direct: median(d),
        via: median(v),
        via_cpu_us: ticks as f64 * 1e6 / crate::procs::TICKS_PER_SEC / requests.max(1) as f64,
    }
}

/// Interleaved saturation turns, direct and through a hop.
pub struct Saturation {
    /// Medians of the turns, requests per second.
    pub direct: f64,
    pub via: f64,
    /// CPU time the hop's process spent per request (all its threads, user and system).
    pub via_cpu_us: f64,
}

/// One closed-loop run: its rate, and the requests it completed.
pub struct Turn {
    pub per_sec: f64,
    pub requests: u64,
}

/// Requests per second with `concurrency` requests always in flight.
pub async fn saturate(client: &reqwest::Client, url: &str, concurrency: usize, secs: f64) -> Turn {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, done) = (client.clone(), url.to_string(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    if one(&client, &url, BODY, "{}").await {
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let requests = done.load(std::sync::atomic::Ordering::Relaxed);
    Turn {
        per_sec: requests as f64 / start.elapsed().as_secs_f64(),
        requests,
    }
}

pub struct StreamRun {
    pub first_byte: Percentiles,
    /// Mean gap between consecutive chunks, per stream.
    pub gap: Percentiles,
    /// Longest gap between consecutive chunks but the last, per stream: a chunk held back
    /// shows here even when the mean hides it.
    pub longest_gap: Percentiles,
    /// Gap before the last chunk, which the proxy holds until the usage record is committed.
    pub last_gap: Percentiles,
}

/// `n` streams one after another; the mock spaces its events `chunk_ms` apart.
pub async fn streams(client: &reqwest::Client, url: &str, n: usize, chunk_ms: u64) -> StreamRun {
    let script = format!(
        r#"{{"chunk_delay_ms":{chunk_ms},"text":"one two three four five six seven eight"}}"#
    );
    let (mut ttfb, mut gaps) = (Vec::new(), Vec::new());
    let (mut longest, mut lasts) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let Ok(r) = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-mock", &script)
            .body(STREAM_BODY)
            .send()
            .await
        else {
            continue;
        };
        let mut body = r.bytes_stream();
        let mut arrivals = Vec::new();
        while let Some(Ok(_)) = body.next().await {
            arrivals.push(t.elapsed().as_secs_f64() * 1e6);
        }
        if let (Some(first), Some(last)) = (arrivals.first(), arrivals.last()) {
            ttfb.push(*first);
            if arrivals.len() > 2 {
                let between: Vec<f64> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
                gaps.push((last - first) / between.len() as f64);
                let (last_gap, rest) = between.split_last().unwrap_or((&0.0, &[]));
                longest.push(rest.iter().copied().fold(0.0, f64::max));
                lasts.push(*last_gap);
            }
        }
    }
    StreamRun {
        first_byte: percentiles(ttfb),
        gap: percentiles(gaps),
        longest_gap: percentiles(longest),
        last_gap: percentiles(lasts),
    }
}

/// Opens `n` streams at once that last about `secs`; each task says whether its stream completed.
pub fn open_streams(
    client: &reqwest::Client,
    url: &str,
    n: usize,
    secs: u64,
) -> Vec<tokio::task::JoinHandle<bool>> {
    let events = 14u64;
    let script = format!(
        r#"{{"chunk_delay_ms":{},"text":"one two three four five six seven eight"}}"#,
        secs * 1000 / events
    );
    (0..n)
        .map(|_| {
            let (client, url, script) = (client.clone(), url.to_string(), script.clone());
            tokio::spawn(async move {
                let Ok(r) = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-mock", &script)
                    .body(STREAM_BODY)
                    .send()
                    .await
                else {
                    return false;
                };
                r.bytes()
                    .await
                    .map(|b| b.ends_with(b"\n\n"))
                    .unwrap_or(false)
            })
        })
        .collect()
}
