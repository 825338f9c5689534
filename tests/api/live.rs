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
    assert!(lines[0].starts_with("id,created_at,budget,model,status"));
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
