//! The sections of the full report, each measuring one thing against the same processes.

use crate::load::{self, Percentiles};
use crate::{Bench, Report, added, db, latency_row, memory_beside_relay, ms, procs};
use anyhow::{Context, Result};
use std::time::Duration;

/// Non-streaming latency at concurrency 1 and at fixed rates, with the references.
pub async fn latency(r: &mut Report, b: &Bench) {
    let (client, direct, proxied, relayed) = (&b.client, &b.direct, &b.proxied, &b.relayed);
    let (dc, pc, plan) = (&b.direct_count, &b.proxied_count, &b.plan);
    r.line("");
    r.line("## Non-streaming latency (ms): direct to the mock, through the proxy, added");
    r.line("");
    r.line("| load | direct p50 / p90 / p99 | proxy p50 / p90 / p99 | added p50 / p90 / p99 | proxy errors |");
    r.line("|---|---|---|---|---|");
    let (d, p) = load::sequential_pair(client, direct, proxied, plan.sequential).await;
    r.line(latency_row("concurrency 1", d, p, 0));
    // References: the same hop for a free endpoint (no admission, no accounting), which shows
    // how much of the overhead is plain forwarding, and the simplest relay hyper allows.
    let (d, p) = load::sequential_pair(client, dc, pc, plan.sequential).await;
    r.line(latency_row(
        "concurrency 1, forwarding only (`count_tokens`: not admitted, not recorded)",
        d,
        p,
        0,
    ));
    let (d, p) = load::sequential_pair(client, direct, relayed, plan.sequential).await;
    r.line(latency_row(
        "concurrency 1, bare hyper relay (reference, not agent-budget: `bench/src/bin/bare-relay.rs`)",
        d,
        p,
        0,
    ));
    for rate in [500u32, 2000, 5000] {
        // Warmed up, so this table is the steady state (PERFORMANCE.md has a cold start).
        let (d, p) = load::rate_pair(client, direct, proxied, rate, plan.secs, true).await;
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
            let (d, p) = load::rate_pair(client, dc, pc, rate, plan.secs, true).await;
            r.line(latency_row(
                &format!("{rate} req/s, forwarding only"),
                d.latency,
                p.latency,
                p.errors,
            ));
            let (d, p) = load::rate_pair(client, direct, relayed, rate, plan.secs, true).await;
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
}

/// Throughput with 64 in flight, and the CPU time per request in the hop.
pub async fn saturation(r: &mut Report, b: &Bench) {
    let (client, direct, proxied, relayed) = (&b.client, &b.direct, &b.proxied, &b.relayed);
    let (dc, pc, plan, proxy, relay) = (
        &b.direct_count,
        &b.proxied_count,
        &b.plan,
        &b.proxy,
        &b.relay,
    );
    r.line("");
    let pid = proxy.child.id();
    let s = load::saturate_pair(client, direct, proxied, pid, plan.secs).await;
    r.line(format!(
        "## Saturation (64 in flight, medians of one-second turns): direct {:.0} req/s, proxy {:.0} req/s, ratio {:.2}",
        s.direct,
        s.via,
        s.via / s.direct
    ));
    // The references again: what plain forwarding and the simplest relay reach here.
    let f = load::saturate_pair(client, dc, pc, pid, plan.secs).await;
    let b = load::saturate_pair(client, direct, relayed, relay.child.id(), plan.secs).await;
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
}

/// Streams: first byte and the gaps between chunks.
pub async fn streaming(r: &mut Report, b: &Bench) {
    let (client, direct, proxied, relayed) = (&b.client, &b.direct, &b.proxied, &b.relayed);
    let plan = &b.plan;
    let sd = load::streams(client, direct, plan.streams, 5).await;
    let sp = load::streams(client, proxied, plan.streams, 5).await;
    let sr = load::streams(client, relayed, plan.streams, 5).await;
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
}

/// Memory idle and with many streams open, beside the bare relay's.
pub async fn memory(r: &mut Report, b: &Bench) {
    let (client, plan, idle_rss) = (&b.client, &b.plan, b.idle_rss);
    r.line("## Memory (MiB)");
    r.line("");
    let targets = (
        (b.relayed.as_str(), &b.relay),
        (b.proxied.as_str(), &b.proxy),
    );
    let streams_rss = memory_beside_relay(r, client, targets, "proxy", plan.open_streams).await;
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
}

/// Start-up and dashboard queries on databases of millions of records.
pub async fn large_databases(r: &mut Report, b: &Bench, mock_port: u16) -> Result<()> {
    let (client, plan) = (&b.client, &b.plan);
    let big = b.work.join("big");
    let (p, _) = procs::proxy(&big, mock_port)?;
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
        let (p, _) = procs::proxy(&big, mock_port)?;
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

    queries(r, b, &big, id, mock_port).await
}

/// The first request after start-up and the dashboard's queries on the large database.
async fn queries(
    r: &mut Report,
    b: &Bench,
    big: &std::path::Path,
    id: i64,
    mock_port: u16,
) -> Result<()> {
    let (client, plan) = (&b.client, &b.plan);
    db::fill(
        &big.join("agent-budget.db"),
        id,
        plan.query_rows - plan.startup_rows,
    )?;
    let (p, _) = procs::proxy(big, mock_port)?;
    // Right after start-up, while retention's first sweep of the big table runs.
    let first = db::time_message(
        client,
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
        let (median, max) = db::time_get(client, &format!("{base}{path}"), 5).await?;
        worst = worst.max(max);
        r.line(format!("  - `GET /api{path}`: {median:.1} / {max:.1}"));
    }
    r.target(
        &format!("every dashboard query < 50 ms on {} rows", plan.query_rows),
        format!("slowest {worst:.1} ms"),
        worst < 50.0,
    );
    drop(p);

    Ok(())
}

/// The targets' table, and the report written to `out` below its marker.
pub fn write(r: &mut Report, out: &str) -> Result<()> {
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
    let kept = std::fs::read_to_string(out)
        .ok()
        .and_then(|old| old.split_once(MARKER).map(|(before, _)| before.to_string()))
        .unwrap_or_else(|| "# Performance\n\n".to_string());
    let method = "Generated by `scripts/bench.sh` (the `agent-budget-bench` binary): it starts the mock upstream and \
`agent-budget serve` (release builds, separate processes) and drives both from one load generator, so load generator, mock \
and proxy share the machine's cores. At a fixed rate the generator is open-loop (requests go out on schedule whatever the \
responses do); latency is timed from each request's send. Through the proxy every request is admitted against the `default` \
budget, settled, and its usage record committed to SQLite before the response is sent: durable accounting on.\n\n";
    std::fs::write(out, format!("{kept}{MARKER}\n\n{method}{}", r.text))
        .with_context(|| format!("write {out}"))?;
    println!("\nwritten to {out}");
    Ok(())
}
