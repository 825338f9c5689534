//! Streams for the dashboard: live events (SSE) and the CSV export.

use crate::helpers::*;
use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn events_stream_what_happens_as_server_sent_events() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/api/events")).send().await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = r.bytes_stream();
    app.create_budget(json!({"name": "team", "max_dollars": "1"}))
        .await;
    app.send(Some("team"), &body("claude-haiku-4-5", 10), None)
        .await;
    let mut text = String::new();
    while !text.contains("event: usage_recorded") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("no event within 5 s");
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
    assert!(text.contains("event: budget_created\ndata: {"), "{text}");
    let data = text
        .split("event: usage_recorded\ndata: ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        (v["budget"].as_str(), v["status"].as_str()),
        (Some("team"), Some("ok"))
    );
}

#[tokio::test]
async fn usage_exports_as_csv_with_every_record() {
    let app = spawn_app().await;
    for i in 1..=3u64 {
        let usage = json!({"usage": {"input_tokens": i * 1000, "output_tokens": 0}});
        app.send(None, &body("claude-sonnet-4-6", 10), Some(usage))
            .await;
    }
    let r = app
        .client
        .get(app.url("/api/budgets/default/usage.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("agent-budget-default-usage.csv")
    );
    let text = r.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(
        lines[0],
        "id,created_at,budget,model,status,estimated,priced_as,http_status,stream,input_tokens,\
         cache_write_5m_tokens,cache_write_1h_tokens,cache_read_tokens,output_tokens,\
         web_search_requests,cost_dollars,duration_ms,upstream_request_id,worst_case_dollars,\
         clamped_max_tokens,session,agent_id,parent_agent_id,agent_type,project"
    );
    for l in &lines {
        assert_eq!(cells(l).len(), 25, "every row has every column: {l}");
    }
    let costs: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').nth(15).unwrap())
        .collect();
    assert_eq!(
        costs,
        ["0.009", "0.006", "0.003"],
        "newest first, exact decimals"
    );
    assert_eq!(
        app.client
            .get(app.url("/api/budgets/nope/usage.csv"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

/// The cells of one CSV line (quotes honoured).
fn cells(line: &str) -> Vec<String> {
    let (mut out, mut cell, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cell)),
            _ => cell.push(c),
        }
    }
    out.push(cell);
    out
}

/// A client picks the model name and the session: neither reaches a spreadsheet as a formula.
#[tokio::test]
async fn csv_cells_a_client_chose_are_never_formulas_and_sessions_and_agents_are_exported() {
    let app = spawn_app().await;
    let evil = "=HYPERLINK(\"http://evil.example\",\"click\")";
    let r = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", "sk-test")
        .header("x-agent-budget-session", "@SUM(A1:A9)")
        .header("x-claude-code-agent-type", "=cmd|'/c+calc'!A1")
        .json(&body(evil, 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = app.get_text("/api/budgets/default/usage.csv").await;
    let row = cells(text.lines().nth(1).unwrap());
    assert_eq!(row.len(), 25, "{text}");
    assert_eq!(row[3], format!("'{evil}"));
    assert_eq!(row[20], "'@SUM(A1:A9)");
    assert_eq!(
        row[23], "'=cmd|'/c+calc'!A1",
        "agent headers are client text too"
    );
    for cell in &row {
        assert!(
            !cell.starts_with(['=', '+', '@', '\t', '\r']),
            "a cell a spreadsheet would evaluate: {cell}"
        );
    }
}

#[tokio::test]
async fn a_csv_export_longer_than_a_page_has_each_record_once() {
    // The export reads 1,000 records at a time, each page after the last record number seen.
    let app = spawn_app().await;
    let request = body("claude-haiku-4-5", 10);
    for _ in 0..(1100 / 25) {
        let sends = (0..25).map(|_| app.send(None, &request, None));
        for r in futures_util::future::join_all(sends).await {
            assert_eq!(r.status(), 200);
        }
    }
    let text = app.get_text("/api/budgets/default/usage.csv").await;
    let ids: Vec<i64> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 1100);
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, none twice"
    );
}

#[tokio::test]
async fn spend_series_has_one_point_per_day_by_budget_and_model() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "team", "max_dollars": "5"}))
        .await;
    let usage = json!({"usage": {"input_tokens": 1000, "output_tokens": 0}});
    app.send(
        Some("team"),
        &body("claude-sonnet-4-6", 10),
        Some(usage.clone()),
    )
    .await;
    app.send(None, &body("claude-haiku-4-5", 10), Some(usage))
        .await;
    let s = app.get("/api/spend?days=7").await;
    assert_eq!(s["days"].as_array().unwrap().len(), 7);
    let team = s["by_budget"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "team")
        .unwrap();
    assert_eq!(
        team["dollars"].as_array().unwrap().last().unwrap(),
        "0.003",
        "today is the last point"
    );
    assert_eq!(team["dollars"][0], "0");
    let haiku = s["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "claude-haiku-4-5")
        .unwrap();
    assert_eq!(haiku["dollars"][6], "0.001");
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary() {
    let app = spawn_app().await;
    let index = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    assert!(
        index.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(index.headers()["cache-control"], "no-cache");
    // Not frameable (clickjacking past the Origin check), no foreign or inline scripts.
    let csp = index.headers()["content-security-policy"].to_str().unwrap();
    for rule in [
        "frame-ancestors 'none'",
        "script-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(csp.contains(rule), "{csp}");
    }
    assert_eq!(index.headers()["x-frame-options"], "DENY");
    assert_eq!(index.headers()["x-content-type-options"], "nosniff");
    let page = index.text().await.unwrap();
    assert!(
        !page.contains("<script>"),
        "an inline script would be blocked by the CSP"
    );
    // Any page path of the app gets the same document (client-side routing).
    let deep = app.get_text("/budgets/team").await;
    assert_eq!(deep, page);
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = redirect
        .get(format!("http://127.0.0.1:{}/agent-budget", app.port))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap()
        ),
        (308, "/agent-budget/")
    );
    assert_eq!(
        app.client
            .get(app.url("/assets/nope.js"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        app.client
            .get(app.url("/api/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Hashed assets referenced by the page are served with a long cache lifetime.
    if let Some(asset) = page
        .split("src=\"./")
        .nth(1)
        .and_then(|s| s.split('"').next())
    {
        let a = app
            .client
            .get(app.url(&format!("/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(a.status(), 200);
        assert!(
            a.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
        assert_eq!(
            a.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
    }
}
