//! `agent-budget-bench`: the proxy's overhead, measured side by side with direct access to the
//! mock upstream, and written to docs/PERFORMANCE.md. Run it through `scripts/bench.sh`.
//!
//! Flags: `--quick` (short runs, small databases), `--out <file>` (default docs/PERFORMANCE.md),
//! `--latency` (only the non-streaming tables, printed, nothing written: for A/B runs),
//! `--rate <n>` (only direct and proxy at n req/s, printed; `--cold` skips the warm-up second),
//! `--memory` (only memory: on a fresh proxy, then again after a load burst; printed).
#![expect(clippy::print_stdout, reason = "a command-line report")]

mod db;
mod load;
mod procs;
mod team;

use anyhow::{Context, Result};
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

async fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let latency_only = args.iter().any(|a| a == "--latency");
    let cold = args.iter().any(|a| a == "--cold");
    let memory_only = args.iter().any(|a| a == "--memory");
    let only_rate: Option<u32> = args
        .iter()
        .position(|a| a == "--rate")
        .and_then(|i| args.get(i + 1))
        .and_then(|r| r.parse().ok());
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "docs/PERFORMANCE.md".into());
    let plan = if quick {
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
    };
    let mut r = Report {
        text: String::new(),
        targets: Vec::new(),
    };
    let machine = procs::machine();
    let client = load::client();
    // Removed when dropped, on every way out (errors and the single-measurement modes too): a
    // full run leaves gigabytes of databases behind otherwise.
    let dir = tempfile::Builder::new()
        .prefix("agent-budget-bench-")
        .tempdir()?;
    let work = dir.path();

    if args.iter().any(|a| a == "--team") {
        for line in team::run(work, plan.sequential, plan.secs).await? {
            r.line(line);
        }
        return Ok(());
    }
    let mock = procs::mock()?;
    let (proxy, _) = procs::proxy(&work.join("live"), mock.port)?;
    let direct = format!("http://127.0.0.1:{}/v1/messages", mock.port);
    let proxied = format!("http://127.0.0.1:{}/agent-budget/v1/messages", proxy.port);
    let relay = procs::bare_relay(mock.port)?;
    let relayed = format!("http://127.0.0.1:{}/v1/messages", relay.port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (idle_rss, _) = procs::rss(proxy.child.id());

    r.line(format!("Machine: {machine}"));
    r.line(format!(
        "Run: {}{}",
        if quick { "quick, " } else { "" },
        chrono_free_date()
    ));
    if let Some(rate) = only_rate {
        let (d, p) = load::rate_pair(&client, &direct, &proxied, rate, plan.secs, !cold).await;
        r.line(latency_row(
            &format!("{rate} req/s"),
            d.latency,
            p.latency,
            p.errors,
        ));
        return Ok(());
    }
    if memory_only {
        r.line("## Memory (MiB)");
        let targets = ((relayed.as_str(), &relay), (proxied.as_str(), &proxy));
        memory_beside_relay(&mut r, &client, targets, "proxy, fresh", plan.open_streams).await;
        let sp = load::saturate(&client, &proxied, 64, plan.secs)
            .await
            .per_sec;
        let burst = load::at_rate(&client, &proxied, 5000, plan.secs).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let label = format!(
            "proxy after saturation ({sp:.0} req/s) and a cold 5,000 req/s burst ({:.0} achieved)",
            burst.achieved_rps
        );
        memory(&mut r, &label, &client, &proxied, &proxy, plan.open_streams).await;
        return Ok(());
    }
    r.line("");
    r.line("## Non-streaming latency (ms): direct to the mock, through the proxy, added");
    r.line("");
    r.line("| load | direct p50 / p90 / p99 | proxy p50 / p90 / p99 | added p50 / p90 / p99 | proxy errors |");
    r.line("|---|---|---|---|---|");
    let (d, p) = load::sequential_pair(&client, &direct, &proxied, plan.sequential).await;
    r.line(latency_row("concurrency 1", d, p, 0));
    // References: the same hop for a free endpoint (no admission, no accounting), which shows
    // how much of the overhead is plain forwarding, and the simplest relay hyper allows.
    let (dc, pc) = (
        direct.replace("/messages", "/messages/count_tokens"),
        proxied.replace("/messages", "/messages/count_tokens"),
    );
    let (d, p) = load::sequential_pair(&client, &dc, &pc, plan.sequential).await;
    r.line(latency_row(
        "concurrency 1, forwarding only (`count_tokens`: not admitted, not recorded)",
        d,
        p,
        0,
    ));
    let (d, p) = load::sequential_pair(&client, &direct, &relayed, plan.sequential).await;
    r.line(latency_row(
        "concurrency 1, bare hyper relay (reference, not agent-budget: `bench/src/bin/bare-relay.rs`)",
        d,
        p,
        0,
    ));
    for rate in [500u32, 2000, 5000] {
        // Warmed up, so this table is the steady state (PERFORMANCE.md has a cold start).
        let (d, p) = load::rate_pair(&client, &direct, &proxied, rate, plan.secs, true).await;
        let a = added(p.latency, d.latency);
        r.line(latency_row(
            &format!(
                "{rate} req/s (achieved {:.0} / {:.0})",
                d.achieved_rps, p.achieved_rps
            ),
            d.latency,
            p.latency,
            p.errors,
        ));
        if rate == 2000 {
            // The references again, at the rate the targets name.
            let (d, p) = load::rate_pair(&client, &dc, &pc, rate, plan.secs, true).await;
            r.line(latency_row(
                &format!("{rate} req/s, forwarding only"),
                d.latency,
                p.latency,
                p.errors,
            ));
            let (d, p) = load::rate_pair(&client, &direct, &relayed, rate, plan.secs, true).await;
            r.line(latency_row(
                &format!("{rate} req/s, bare hyper relay (reference, not agent-budget)"),
                d.latency,
                p.latency,
                p.errors,
            ));
            r.target(
                "added p50 at 2,000 req/s ≤ 0.1 ms",
                format!("{} ms", ms(a.p50)),
                a.p50 <= 100.0,
            );
            r.target(
                "added p99 at 2,000 req/s ≤ 0.5 ms",
                format!("{} ms", ms(a.p99)),
                a.p99 <= 500.0,
            );
        }
    }
    r.line("");
    let pid = proxy.child.id();
    let s = load::saturate_pair(&client, &direct, &proxied, pid, plan.secs).await;
    r.line(format!(
        "## Saturation (64 in flight, medians of one-second turns): direct {:.0} req/s, proxy {:.0} req/s, ratio {:.2}",
        s.direct,
        s.via,
        s.via / s.direct
    ));
    // The references again: what plain forwarding and the simplest relay reach here.
    let f = load::saturate_pair(&client, &dc, &pc, pid, plan.secs).await;
    let b = load::saturate_pair(&client, &direct, &relayed, relay.child.id(), plan.secs).await;
    r.line("");
    r.line(format!(
        "References: forwarding only (`count_tokens`) {:.0} req/s against {:.0} direct, ratio {:.2}; bare hyper relay {:.0} req/s against {:.0} direct, ratio {:.2}",
        f.via,
        f.direct,
        f.via / f.direct,
        b.via,
        b.direct,
        b.via / b.direct
    ));
    r.line("");
    r.line(format!(
        "CPU time per request in the hop during those turns (all its threads, user and system): proxy {:.1} µs, forwarding only {:.1} µs, bare relay {:.1} µs",
        s.via_cpu_us, f.via_cpu_us, b.via_cpu_us
    ));
    r.target(
        "saturation throughput ≥ 50 % of direct",
        format!("{:.0} %", 100.0 * s.via / s.direct),
        s.via / s.direct >= 0.5,
    );
    r.line("");
    if latency_only {
        return Ok(());
    }

    let sd = load::streams(&client, &direct, plan.streams, 5).await;
    let sp = load::streams(&client, &proxied, plan.streams, 5).await;
    let sr = load::streams(&client, &relayed, plan.streams, 5).await;
    r.line("## Streaming (ms; events 5 ms apart)");
    r.line("");
    r.line("| | direct p50 / p99 | through p50 / p99 | added p50 / p99 |");
    r.line("|---|---|---|---|");
    let pair = |x: Percentiles| format!("{} / {}", ms(x.p50), ms(x.p99));
    let row = |what: &str, d: Percentiles, p: Percentiles| {
        format!(
            "| {what} | {} | {} | {} |",
            pair(d),
            pair(p),
            pair(added(p, d))
        )
    };
    r.line(row("first byte, proxy", sd.first_byte, sp.first_byte));
    r.line(row("mean gap between chunks, proxy", sd.gap, sp.gap));
    r.line(row(
        "longest gap between chunks but the last, proxy",
        sd.longest_gap,
        sp.longest_gap,
    ));
    r.line(row(
        "gap before the last chunk (held for the usage commit), proxy",
        sd.last_gap,
        sp.last_gap,
    ));
    r.line(row(
        "first byte, bare hyper relay (reference)",
        sd.first_byte,
        sr.first_byte,
    ));
    let (af, ag, al) = (
        added(sp.first_byte, sd.first_byte),
        added(sp.gap, sd.gap),
        added(sp.longest_gap, sd.longest_gap),
    );
    r.target(
        "streaming first byte ≤ 0.2 ms later than direct (p50)",
        format!("{} ms", ms(af.p50)),
        af.p50 <= 200.0,
    );
    r.target(
        "no extra delay per chunk (p50 mean and longest gap but the last within 0.1 ms)",
        format!("{} / {} ms", ms(ag.p50), ms(al.p50)),
        ag.p50 <= 100.0 && al.p50 <= 100.0,
    );
    r.line("");

    r.line("## Memory (MiB)");
    r.line("");
    let targets = ((relayed.as_str(), &relay), (proxied.as_str(), &proxy));
    let streams_rss =
        memory_beside_relay(&mut r, &client, targets, "proxy", plan.open_streams).await;
    r.target(
        "RSS idle < 30 MB",
        format!("{idle_rss:.1} MiB"),
        idle_rss < 30.0,
    );
    r.target(
        &format!("RSS with {} open streams < 150 MB", plan.open_streams),
        format!("{streams_rss:.1} MiB"),
        streams_rss < 150.0,
    );
    r.line("");
    drop(proxy);

    // Large databases.
    let big = work.join("big");
    let (p, _) = procs::proxy(&big, mock.port)?;
    let created = client
        .post(format!(
            "http://127.0.0.1:{}/agent-budget/api/budgets",
            p.port
        ))
        .body(r#"{"name":"bench","max_dollars":"1000000","period":"monthly"}"#)
        .header("content-type", "application/json")
        .bearer_auth(procs::ADMIN_TOKEN)
        .send()
        .await?;
    let id = serde_json::from_slice::<serde_json::Value>(&created.bytes().await?)?["id"]
        .as_i64()
        .context("budget id")?;
    drop(p);
    r.line("## Large databases");
    r.line("");
    db::fill(&big.join("agent-budget.db"), id, plan.startup_rows)?;
    let mut starts = Vec::new();
    // Six starts; the first (cold page cache) is dropped.
    for _ in 0..6 {
        let started = std::time::Instant::now();
        let (p, _) = procs::proxy(&big, mock.port)?;
        let health = format!("http://127.0.0.1:{}/agent-budget/health", p.port);
        while client
            .get(&health)
            .send()
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        starts.push(started.elapsed().as_secs_f64() * 1e3);
        drop(p);
    }
    starts.remove(0);
    starts.sort_by(f64::total_cmp);
    let start_ms = starts[starts.len() / 2];
    r.line(format!(
        "- start-up to healthy with {} usage rows: {start_ms:.0} ms (median of 5)",
        plan.startup_rows
    ));
    r.target(
        &format!(
            "start-up to healthy < 200 ms with {} rows",
            plan.startup_rows
        ),
        format!("{start_ms:.0} ms"),
        start_ms < 200.0,
    );

    db::fill(
        &big.join("agent-budget.db"),
        id,
        plan.query_rows - plan.startup_rows,
    )?;
    let (p, _) = procs::proxy(&big, mock.port)?;
    // Right after start-up, while retention's first sweep of the big table runs.
    let first = db::time_message(
        &client,
        &format!(
            "http://127.0.0.1:{}/agent-budget/b/bench/v1/messages",
            p.port
        ),
    )
    .await?;
    r.line(format!(
        "- the first Messages request after start-up with {} usage rows (retention's first sweep running): {first:.1} ms",
        plan.query_rows
    ));
    let base = format!("http://127.0.0.1:{}/agent-budget/api", p.port);
    r.line(format!(
        "- dashboard queries with {} usage rows (median / max of 5, ms):",
        plan.query_rows
    ));
    let mut worst: f64 = 0.0;
    for path in [
        "/budgets",
        "/budgets/bench",
        "/budgets/bench/usage?limit=50",
        "/budgets/bench/usage?limit=50&offset=1000000",
        "/stats",
        "/pricing",
    ] {
        let (median, max) = db::time_get(&client, &format!("{base}{path}"), 5).await?;
        worst = worst.max(max);
        r.line(format!("  - `GET /api{path}`: {median:.1} / {max:.1}"));
    }
    r.target(
        &format!("every dashboard query < 50 ms on {} rows", plan.query_rows),
        format!("slowest {worst:.1} ms"),
        worst < 50.0,
    );
    drop(p);
    drop(mock);

    r.line("");
    r.line("## Targets");
    r.line("");
    r.line("| target | measured | met |");
    r.line("|---|---|---|");
    for (what, got, ok) in std::mem::take(&mut r.targets) {
        r.line(format!(
            "| {what} | {got} | {} |",
            if ok { "yes" } else { "**no**" }
        ));
    }
    // Everything after the marker is regenerated; what stands before it is kept.
    const MARKER: &str =
        "<!-- results: generated by scripts/bench.sh; everything below is rewritten -->";
    let kept = std::fs::read_to_string(&out)
        .ok()
        .and_then(|old| old.split_once(MARKER).map(|(before, _)| before.to_string()))
        .unwrap_or_else(|| "# Performance\n\n".to_string());
    let method = "Generated by `scripts/bench.sh` (the `agent-budget-bench` binary): it starts the mock upstream and \
`agent-budget serve` (release builds, separate processes) and drives both from one load generator, so load generator, mock \
and proxy share the machine's cores. At a fixed rate the generator is open-loop (requests go out on schedule whatever the \
responses do); latency is timed from each request's send. Through the proxy every request is admitted against the `default` \
budget, settled, and its usage record committed to SQLite before the response is sent: durable accounting on.\n\n";
    std::fs::write(&out, format!("{kept}{MARKER}\n\n{method}{}", r.text))
        .with_context(|| format!("write {out}"))?;
    println!("\nwritten to {out}");
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
