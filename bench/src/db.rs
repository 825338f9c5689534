//! Large databases: start-up time with many usage rows, and dashboard query times.

use anyhow::{Context, Result};
use rusqlite::{Connection, params};
use std::path::Path;
use std::time::Instant;

const MODELS: [&str; 4] = [
    "claude-opus-4-8",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
    "claude-opus-5",
];

/// Adds `rows` usage records spread over the last 90 days to budget `budget_id`, with their
/// daily roll-ups, directly in SQLite (the server is stopped).
pub fn fill(db: &Path, budget_id: i64, rows: u64) -> Result<()> {
    let mut conn = Connection::open(db).context("open the benchmark database")?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let span_ms = 90 * 86_400_000i64;
    let tx = conn.transaction()?;
    let first: i64 = tx.query_row(
        "SELECT COALESCE(max(seq), 0) + 1 FROM usage WHERE budget_id = ?1",
        [budget_id],
        |r| r.get(0),
    )?;
    {
        let mut ins = tx.prepare(
            "INSERT INTO usage (created_at, budget_id, model, status, estimated, priced_as, http_status, stream,
                input_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, output_tokens,
                web_search_requests, cost, duration_ms, upstream_request_id, seq)
             VALUES (?1, ?2, ?3, 'ok', 0, 'table', 200, ?4, ?5, 0, 0, ?6, ?7, 0, ?8, ?9, ?10, ?11)",
        )?;
        for i in 0..rows {
            let at = now_ms - span_ms + (i as i64 * span_ms) / rows.max(1) as i64;
            let (input, read, output) = (
                1000 + (i % 5000) as i64,
                (i % 20_000) as i64,
                50 + (i % 2000) as i64,
            );
            let cost = input * 3_000_000 + read * 300_000 + output * 15_000_000;
            ins.execute(params![
                at,
                budget_id,
                MODELS[(i % 4) as usize],
                i % 2 == 0,
                input,
                read,
                output,
                cost,
                800 + (i % 900) as i64,
                format!("req_{i:016}"),
                first + i as i64
            ])?;
        }
    }
    tx.execute(
        "INSERT INTO daily (budget_id, day, model, requests, blocked, input_tokens, cache_write_tokens, cache_read_tokens,
            output_tokens, web_search_requests, dollars)
         SELECT budget_id, date(created_at / 1000, 'unixepoch', 'localtime'), model, COUNT(*), 0, SUM(input_tokens),
            SUM(cache_write_5m_tokens + cache_write_1h_tokens), SUM(cache_read_tokens), SUM(output_tokens), 0, SUM(cost)
         FROM usage WHERE budget_id = ?1 GROUP BY 1, 2, 3
         ON CONFLICT (budget_id, day, model) DO UPDATE SET requests = excluded.requests, dollars = excluded.dollars",
        [budget_id],
    )?;
    tx.commit()?;
    conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
    Ok(())
}

/// Milliseconds of `n` GETs of `url`: (median, max).
pub async fn time_get(client: &reqwest::Client, url: &str, n: usize) -> Result<(f64, f64)> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = client
            .get(url)
            .bearer_auth(crate::procs::ADMIN_TOKEN)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "GET {url}: {}", r.status());
        r.bytes().await?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(f64::total_cmp);
    Ok((v[v.len() / 2], v[v.len() - 1]))
}

/// Milliseconds of one Messages request to `url`.
pub async fn time_message(client: &reqwest::Client, url: &str) -> Result<f64> {
    let t = Instant::now();
    anyhow::ensure!(
        crate::load::one(client, url, crate::load::BODY, "{}").await,
        "POST {url} failed"
    );
    Ok(t.elapsed().as_secs_f64() * 1e3)
}
