//! `GET /agent-budget/metrics` (docs/metrics.md): admin-only unless `--open-metrics`; the
//! counters agree with the usage records; labels stay bounded whatever clients send.

use crate::helpers::*;
use serde_json::json;

async fn scrape(app: &TestApp) -> String {
    let r = reqwest::Client::new()
        .get(app.url("/metrics"))
        .bearer_auth(app.admin_token.as_deref().unwrap())
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    r.text().await.unwrap()
}

/// The value of the sample `name{labels}` (labels exactly as written), if there is one.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[tokio::test]
async fn metrics_need_the_admin_token_unless_opened() {
    let app = spawn_app().await;
    let r = reqwest::get(app.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 401);
    let open = spawn_with(|s| s.open_metrics = true).await;
    let r = reqwest::get(open.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("# TYPE agent_budget_open_streams gauge")
    );
    // The admin API stays closed.
    assert_eq!(
        reqwest::get(open.url("/api/budgets"))
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn the_counters_agree_with_the_records() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "team", "max_dollars": "0.05"}))
        .await;
    for _ in 0..3 {
        let r = app
            .send(
                Some("team"),
                &body("claude-haiku-4-5", 100),
                Some(output_of(2000)),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    // A model no price names: one label, `other`, whatever its name.
    for m in ["made-up-1", "made-up-2"] {
        assert_eq!(
            app.send(Some("team"), &body(m, 10), None).await.status(),
            200
        );
    }
    // $0.05 cap: 3 × $0.01 + the unpriced ones' fallback prices; this worst case does not fit.
    let r = app
        .send(Some("team"), &body("claude-haiku-4-5", 20_000), None)
        .await;
    assert_eq!(r.status(), 429);
    let text = scrape(&app).await;
    let records = app.usage("team").await;
    let ok = records.iter().filter(|r| r["status"] == "ok").count() as f64;
    let forwarded = r#"agent_budget_requests_total{budget="team",outcome="forwarded",reason="ok"}"#;
    assert_eq!(sample(&text, forwarded), Some(ok), "{text}");
    let refused =
        r#"agent_budget_requests_total{budget="team",outcome="refused",reason="dollars"}"#;
    assert_eq!(sample(&text, refused), Some(1.0));
    let output: u64 = records
        .iter()
        .filter(|r| r["model"] == "claude-haiku-4-5")
        .map(|r| r["output_tokens"].as_u64().unwrap())
        .sum();
    let tokens = r#"agent_budget_tokens_total{model="claude-haiku-4-5",kind="output"}"#;
    assert_eq!(sample(&text, tokens), Some(output as f64));
    assert!(
        sample(
            &text,
            r#"agent_budget_tokens_total{model="other",kind="input"}"#
        )
        .is_some()
    );
    assert!(
        !text.contains("made-up"),
        "a client's model name is never a label"
    );
    let spent = dollars(&app.budget("team").await["spent_dollars"]);
    let gauge = sample(&text, r#"agent_budget_budget_spent_dollars{budget="team"}"#).unwrap();
    assert!(
        (gauge - spent.picos() as f64 / 1e12).abs() < 1e-9,
        "{gauge} vs {spent}"
    );
    assert_eq!(
        sample(&text, r#"agent_budget_budget_cap_dollars{budget="team"}"#),
        Some(0.05)
    );
    let charged = sample(&text, r#"agent_budget_cost_dollars_total{budget="team"}"#).unwrap();
    assert!((charged - spent.picos() as f64 / 1e12).abs() < 1e-9);
    assert_eq!(
        sample(&text, "agent_budget_added_latency_seconds_count"),
        Some(5.0)
    );
    assert_eq!(sample(&text, "agent_budget_open_streams"), Some(0.0));
    assert!(text.contains("agent_budget_writer_commit_seconds_bucket"));
    // Nothing of a key or a session in any label.
    assert!(!text.contains("sk-test") && !text.contains("session"));
}

/// Metric names as written (`agent_budget_…`), without a histogram's or counter's suffix.
fn names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for (i, _) in text.match_indices("agent_budget_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_bucket", "_count", "_sum", "_total"]
            .iter()
            .fold(name.clone(), |n, s| {
                n.strip_suffix(s).map_or(n.clone(), str::to_string)
            });
        out.insert(base);
    }
    out
}

#[tokio::test]
async fn the_dashboard_and_the_docs_name_only_metrics_that_exist() {
    let app = spawn_app().await;
    // A forwarded and a refused request; the families with nothing to count yet (upstream
    // errors, webhooks, a team database) are left out of the comparison.
    app.create_budget(json!({"name": "team", "max_dollars": "0.01"}))
        .await;
    assert_eq!(
        app.send(Some("team"), &body("claude-haiku-4-5", 10), None)
            .await
            .status(),
        200
    );
    assert_eq!(
        app.send(Some("team"), &body("claude-haiku-4-5", 9000), None)
            .await
            .status(),
        429
    );
    let scraped = names(&scrape(&app).await);
    let root = env!("CARGO_MANIFEST_DIR");
    for file in ["docs/grafana/agent-budget.json", "docs/metrics.md"] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let named = names(&text);
        assert!(named.len() >= 10, "{file}: {named:?}");
        for n in named.iter().filter(|n| {
            !n.contains("team_database") && !n.contains("upstream_errors") && !n.contains("webhook")
        }) {
            assert!(
                scraped.contains(n),
                "{file} names {n}, which the proxy does not export: {scraped:?}"
            );
        }
    }
}
