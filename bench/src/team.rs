//! `--team`: what a team database costs. The same capped budget through a proxy on SQLite
//! alone and through one on PostgreSQL (a real server on loopback), beside direct access:
//! added latency one request at a time, and saturation.

use crate::load::{self, Percentiles};
use crate::procs;
use anyhow::{Context, Result};
use mock_upstream::postgres::Postgres;
use std::path::Path;

async fn capped(client: &reqwest::Client, port: u16) -> Result<String> {
    let r = client
        .post(format!("http://127.0.0.1:{port}/agent-budget/api/budgets"))
        .body(r#"{"name":"bench","max_dollars":"1000000","period":"monthly"}"#)
        .header("content-type", "application/json")
        .bearer_auth(procs::ADMIN_TOKEN)
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success(),
        "cannot create the bench budget: {}",
        r.status()
    );
    Ok(format!(
        "http://127.0.0.1:{port}/agent-budget/b/bench/v1/messages"
    ))
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

fn row(what: &str, d: Percentiles, p: Percentiles) -> String {
    format!(
        "| {what} | {} / {} | {} / {} | {} / {} |",
        ms(p.p50),
        ms(p.p99),
        ms(d.p50),
        ms(d.p99),
        ms(p.p50 - d.p50),
        ms(p.p99 - d.p99)
    )
}

pub async fn run(work: &Path, sequential: usize, secs: f64) -> Result<Vec<String>> {
    let client = load::client();
    let mock = procs::mock()?;
    let direct = format!("http://127.0.0.1:{}/v1/messages", mock.port);
    let pg = Postgres::start();
    let (lite, _) = procs::proxy(&work.join("sqlite"), mock.port)?;
    let url = pg.url("postgres");
    let (team, _) = procs::proxy_with(&work.join("team"), mock.port, &["--database", &url])?;
    let lite_url = capped(&client, lite.port).await.context("sqlite proxy")?;
    let team_url = capped(&client, team.port).await.context("team proxy")?;
    let mut out = vec![
        "| capped budget, concurrency 1 | through p50 / p99 | direct p50 / p99 | added p50 / p99 |"
            .to_string(),
        "|---|---|---|---|".to_string(),
    ];
    let (d, p) = load::sequential_pair(&client, &direct, &lite_url, sequential).await;
    out.push(row("SQLite only (the default)", d, p));
    let (d, p) = load::sequential_pair(&client, &direct, &team_url, sequential).await;
    out.push(row("team database (PostgreSQL on loopback)", d, p));
    out.push(String::new());
    let s = load::saturate_pair(&client, &direct, &lite_url, lite.child.id(), secs).await;
    let t = load::saturate_pair(&client, &direct, &team_url, team.child.id(), secs).await;
    out.push(format!(
        "Saturation (64 in flight): SQLite only {:.0} req/s ({:.2} of direct, {:.1} µs CPU per request in the proxy); team database {:.0} req/s ({:.2} of direct, {:.1} µs in the proxy, PostgreSQL's own CPU not counted).",
        s.via,
        s.via / s.direct,
        s.via_cpu_us,
        t.via,
        t.via / t.direct,
        t.via_cpu_us
    ));
    Ok(out)
}
