//! `agent-budget-bench`: the proxy's overhead, measured side by side with direct access to the
//! mock upstream, and written to docs/PERFORMANCE.md. Run it through `scripts/bench.sh`.
//!
//! Flags: `--quick` (short runs, small databases), `--out <file>` (default docs/PERFORMANCE.md),
//! `--latency` (only the non-streaming tables, printed, nothing written: for A/B runs),
//! `--rate <n>` (only direct and proxy at n req/s, printed; `--cold` skips the warm-up second),
//! `--memory` (only memory: on a fresh proxy, then again after a load burst; printed),
//! `--keyed` (2,000 req/s with the client's own key, then with a virtual key; printed),
//! `--chain` (a budget with two ancestors against one alone, interleaved; printed),
//! `--sessions` (with any of the above: each request names a Claude Code session and agent),
//! `--traces` (with any of the above: the proxy exports a span per request, to the mock).
#![expect(clippy::print_stdout, reason = "a command-line report")]

mod chain;
mod db;
mod load;
mod procs;
mod sections;
mod team;

use anyhow::Result;
use load::Percentiles;
use std::fmt::Write as _;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

struct Plan {
    secs: f64,
    sequential: usize,
    streams: usize,
    open_streams: usize,
    startup_rows: u64,
    query_rows: u64,
}

fn added(p: Percentiles, d: Percentiles) -> Percentiles {
    Percentiles {
        p50: p.p50 - d.p50,
        p90: p.p90 - d.p90,
        p99: p.p99 - d.p99,
        max: p.max - d.max,
    }
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

/// One row of the latency table: direct, through the proxy, and the difference.
fn latency_row(load: &str, d: Percentiles, p: Percentiles, errors: usize) -> String {
    let a = added(p, d);
    let three = |x: Percentiles| format!("{} / {} / {}", ms(x.p50), ms(x.p90), ms(x.p99));
    format!(
        "| {load} | {} | {} | {} | {errors} |",
        three(d),
        three(p),
        three(a)
    )
}

struct Report {
    text: String,
    targets: Vec<(String, String, bool)>,
}

impl Report {
    fn line(&mut self, s: impl AsRef<str>) {
        println!("{}", s.as_ref());
        let _ = writeln!(self.text, "{}", s.as_ref());
    }
    fn target(&mut self, what: &str, got: String, ok: bool) {
        self.targets.push((what.to_string(), got, ok));
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    // Interrupted (Ctrl-C, or `timeout`'s SIGTERM), the run is dropped, so its processes are
    // killed and its data removed rather than left running and on disk.
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        done = run() => done,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = terminate.recv() => anyhow::bail!("terminated"),
    }
}

/// What the run measures with.
pub struct Bench {
    plan: Plan,
    client: reqwest::Client,
    work: std::path::PathBuf,
    proxy: procs::Proc,
    relay: procs::Proc,
    direct: String,
    proxied: String,
    relayed: String,
    /// `count_tokens` direct and through the proxy: forwarding alone, the reference.
    direct_count: String,
    proxied_count: String,
    idle_rss: f64,
}

fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).cloned()
}

async fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    let quick = has("--quick");
    if has("--sessions") {
        load::SESSIONS.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    if has("--traces") {
        procs::TRACES.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let only_rate: Option<u32> = flag_value(&args, "--rate").and_then(|r| r.parse().ok());
    let out = flag_value(&args, "--out").unwrap_or_else(|| "docs/PERFORMANCE.md".into());
    let plan = Plan::new(quick);
    let mut r = Report {
        text: String::new(),
        targets: Vec::new(),
    };
    // Removed when dropped, on every way out (errors and the single-measurement modes too): a
    // full run leaves gigabytes of databases behind otherwise.
    let dir = tempfile::Builder::new()
        .prefix("agent-budget-bench-")
        .tempdir()?;
    let work = dir.path();
    if has("--team") {
        for line in team::run(work, plan.sequential, plan.secs).await? {
            r.line(line);
        }
        return Ok(());
    }
    let mock = procs::mock()?;
    let b = Bench::start(plan, work, mock.port).await?;
    r.line(format!("Machine: {}", procs::machine()));
    r.line(format!(
        "Run: {}{}",
        if quick { "quick, " } else { "" },
        chrono_free_date()
    ));
    if let Some(rate) = only_rate {
        let (d, p) = load::rate_pair(
            &b.client,
            &b.direct,
            &b.proxied,
            rate,
            b.plan.secs,
            !has("--cold"),
        )
        .await;
        let label = format!("{rate} req/s");
        r.line(latency_row(&label, d.latency, p.latency, p.errors));
        return Ok(());
    }
    if has("--keyed") {
        return keyed(&mut r, &b, work, mock.port).await;
    }
    if has("--chain") {
        return chain::run(&mut r, &b).await;
    }
    if has("--memory") {
        return memory_only(&mut r, &b).await;
    }
    sections::latency(&mut r, &b).await;
    sections::saturation(&mut r, &b).await;
    if has("--latency") {
        return Ok(());
    }
    sections::streaming(&mut r, &b).await;
    sections::memory(&mut r, &b).await;
    let port = mock.port;
    sections::large_databases(&mut r, &b, port).await?;
    drop(mock);
    sections::write(&mut r, &out)
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                secs: 1.0,
                sequential: 300,
                streams: 20,
                open_streams: 200,
                startup_rows: 50_000,
                query_rows: 200_000,
            }
        } else {
            Plan {
                secs: 5.0,
                sequential: 3000,
                streams: 100,
                open_streams: 1000,
                startup_rows: 1_000_000,
                query_rows: 10_000_000,
            }
        }
    }
}

impl Bench {
    /// Starts the proxy and the bare relay in front of the mock.
    async fn start(plan: Plan, work: &std::path::Path, mock_port: u16) -> Result<Bench> {
        let (proxy, _) = procs::proxy(&work.join("live"), mock_port)?;
        let direct = format!("http://127.0.0.1:{mock_port}/v1/messages");
        let proxied = format!("http://127.0.0.1:{}/agent-budget/v1/messages", proxy.port);
        let relay = procs::bare_relay(mock_port)?;
        let relayed = format!("http://127.0.0.1:{}/v1/messages", relay.port);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (idle_rss, _) = procs::rss(proxy.child.id());
        let count = |u: &str| u.replace("/messages", "/messages/count_tokens");
        Ok(Bench {
            plan,
            client: load::client(),
            work: work.to_path_buf(),
            direct_count: count(&direct),
            proxied_count: count(&proxied),
            proxy,
            relay,
            direct,
            proxied,
            relayed,
            idle_rss,
        })
    }
}

/// `--keyed`: added latency and CPU with the client's own key, then through a second proxy
/// with a virtual key of a capped budget (key lookup, the budget's standing in Claude Code's
/// usage-limit headers, the upstream's rate-limit headers removed). Printed.
async fn keyed(r: &mut Report, b: &Bench, work: &std::path::Path, mock_port: u16) -> Result<()> {
    let secs = b.plan.secs;
    let own = load::rate_pair(&b.client, &b.direct, &b.proxied, 2000, secs, true).await;
    r.line(latency_row(
        "2000 req/s, the client's own key",
        own.0.latency,
        own.1.latency,
        own.1.errors,
    ));
    let s = load::saturate_pair(&b.client, &b.direct, &b.proxied, b.proxy.child.id(), secs).await;
    r.line(format!(
        "CPU per request with the client's own key: {:.1} µs (ratio {:.2})",
        s.via_cpu_us,
        s.via / s.direct
    ));
    let key_file = work.join("upstream-key");
    // Only the owner may read a key file (the proxy refuses it otherwise).
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_file)?
        .write_all(b"sk-ant-bench-real")?;
    let file = key_file.display().to_string();
    let (proxy, _) = procs::proxy_with(
        &work.join("keyed"),
        mock_port,
        &["--upstream-key-file", &file],
    )?;
    let api = format!("http://127.0.0.1:{}/agent-budget/api", proxy.port);
    let post = |path: &str, body: &'static str| {
        b.client
            .post(format!("{api}{path}"))
            .bearer_auth(procs::ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    post(
        "/budgets",
        r#"{"name":"keyed","max_dollars":"1000000","period":"monthly"}"#,
    )
    .await?;
    let made = post("/budgets/keyed/keys", r#"{"name":"bench"}"#)
        .await?
        .bytes()
        .await?;
    let made: serde_json::Value = serde_json::from_slice(&made)?;
    let key = made["key"].as_str().unwrap_or_default().to_string();
    let _ = load::API_KEY.set(key);
    let proxied = format!("http://127.0.0.1:{}/agent-budget/v1/messages", proxy.port);
    let (d, p) = load::rate_pair(&b.client, &b.direct, &proxied, 2000, secs, true).await;
    r.line(latency_row(
        "2000 req/s, a virtual key of a capped budget",
        d.latency,
        p.latency,
        p.errors,
    ));
    let s = load::saturate_pair(&b.client, &b.direct, &proxied, proxy.child.id(), secs).await;
    r.line(format!(
        "CPU per request with the virtual key: {:.1} µs (ratio {:.2})",
        s.via_cpu_us,
        s.via / s.direct
    ));
    Ok(())
}

/// `--memory`: on a fresh proxy, then again after saturation and a burst.
async fn memory_only(r: &mut Report, b: &Bench) -> Result<()> {
    let (client, proxied, plan) = (&b.client, &b.proxied, &b.plan);
    r.line("## Memory (MiB)");
    let targets = ((b.relayed.as_str(), &b.relay), (proxied.as_str(), &b.proxy));
    memory_beside_relay(r, client, targets, "proxy, fresh", plan.open_streams).await;
    let sp = load::saturate(client, proxied, 64, plan.secs).await.per_sec;
    let burst = load::at_rate(client, proxied, 5000, plan.secs).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let label = format!(
        "proxy after saturation ({sp:.0} req/s) and a cold 5,000 req/s burst ({:.0} achieved)",
        burst.achieved_rps
    );
    memory(r, &label, client, proxied, &b.proxy, plan.open_streams).await;
    Ok(())
}

/// One process's memory: before, with `n` streams open, and after they finish. Returns the
/// figure with the streams open.
async fn memory(
    r: &mut Report,
    label: &str,
    client: &reqwest::Client,
    url: &str,
    process: &procs::Proc,
    n: usize,
) -> f64 {
    let (before, _) = procs::rss(process.child.id());
    let tasks = load::open_streams(client, url, n, 6);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (open, _) = procs::rss(process.child.id());
    let mut completed = 0;
    for t in tasks {
        completed += usize::from(t.await.unwrap_or(false));
    }
    let (after, peak) = procs::rss(process.child.id());
    r.line(format!(
        "- {label}: {before:.1} before, {open:.1} with {n} streams open ({completed} completed), \
{after:.1} after; peak over its life {peak:.1}"
    ));
    open
}

/// The bare relay's memory (the reference), then the proxy's; returns the proxy's with the
/// streams open.
async fn memory_beside_relay(
    r: &mut Report,
    client: &reqwest::Client,
    ((relayed, relay), (proxied, proxy)): ((&str, &procs::Proc), (&str, &procs::Proc)),
    label: &str,
    n: usize,
) -> f64 {
    memory(r, "bare hyper relay (reference)", client, relayed, relay, n).await;
    memory(r, label, client, proxied, proxy, n).await
}

/// Today's date from the system clock (UTC), without a date library.
fn chrono_free_date() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
