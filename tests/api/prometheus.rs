//! A real Prometheus (Debian's `prometheus`, on loopback; the test command installs it)
//! scrapes the proxy under load, authenticating with the admin token; its query API's
//! counters then agree with the usage records.

use crate::helpers::*;
use crate::receiver::free_port;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};

/// A Prometheus server, stopped when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` (host:port) every second at `/agent-budget/metrics` with `token`.
    async fn start(target: &str, token: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, token).unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: agent-budget
    metrics_path: /agent-budget/metrics
    authorization: {{credentials_file: {}}}
    static_configs: [{{targets: ['{target}']}}]
",
                token_file.display()
            ),
        )
        .unwrap();
        // The port was free when picked; a test running alongside may take it first, and then
        // Prometheus exits: it starts again on another.
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("Debian's prometheus (scripts/setup.sh installs it)");
            if ready(&mut child, port).await {
                return Prometheus {
                    child,
                    port,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("Prometheus did not start on any of three ports");
    }

    /// The value of an instant query that returns one sample, if it has one.
    async fn query(&self, q: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let encoded: String = q
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let r = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("query={encoded}"))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

/// Waits until Prometheus says it is ready (true), or exits (false); a minute at most.
async fn ready(child: &mut Child, port: u16) -> bool {
    let url = format!("http://127.0.0.1:{port}/-/ready");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        if reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn prometheus_scrapes_the_proxy_under_load_and_its_counters_match_the_records() {
    let app = spawn_app().await;
    let prometheus = Prometheus::start(
        &format!("127.0.0.1:{}", app.port),
        app.admin_token.as_deref().unwrap(),
    )
    .await;
    app.create_budget(json!({"name": "team", "max_dollars": "0.5"}))
        .await;
    app.create_budget(json!({"name": "ci", "max_dollars": "100"}))
        .await;
    app.eventually("Prometheus to scrape the proxy", || async {
        prometheus.query(r#"up{job="agent-budget"}"#).await == Some(1.0)
    })
    .await;
    // 240 requests, 16 at a time, over two budgets; `team` runs out on the way.
    let script = json!({"usage": {"input_tokens": 5, "output_tokens": 1000}});
    let sends = (0..240).map(|i| {
        let (app, script) = (&app, script.clone());
        async move {
            let budget = if i % 2 == 0 { "team" } else { "ci" };
            app.send(Some(budget), &body("claude-haiku-4-5", 2000), Some(script))
                .await
                .status()
                .as_u16()
        }
    });
    let statuses: Vec<u16> = futures_util::stream::iter(sends)
        .buffer_unordered(16)
        .collect()
        .await;
    let refused = statuses.iter().filter(|s| **s == 429).count() as f64;
    assert!(refused > 0.0, "team's cap was reached");
    let mut ok = 0.0;
    let mut output = 0.0;
    for budget in ["team", "ci"] {
        for r in app
            .usage(budget)
            .await
            .iter()
            .filter(|r| r["status"] == "ok")
        {
            ok += 1.0;
            output += r["output_tokens"].as_f64().unwrap();
        }
    }
    let forwarded = r#"sum(agent_budget_requests_total{outcome="forwarded"})"#;
    app.eventually("Prometheus to have scraped the whole run", || async {
        prometheus.query(forwarded).await == Some(ok)
            && prometheus
                .query(r#"sum(agent_budget_requests_total{outcome="refused"})"#)
                .await
                == Some(refused)
    })
    .await;
    let tokens = r#"sum(agent_budget_tokens_total{model="claude-haiku-4-5",kind="output"})"#;
    assert_eq!(prometheus.query(tokens).await, Some(output));
    let spent = dollars(&app.budget("team").await["spent_dollars"]).picos() as f64 / 1e12;
    let gauge = prometheus
        .query(r#"agent_budget_budget_spent_dollars{budget="team"}"#)
        .await
        .unwrap();
    assert!((gauge - spent).abs() < 1e-9, "{gauge} against {spent}");
    let latency = prometheus
        .query("sum(agent_budget_added_latency_seconds_count)")
        .await;
    assert_eq!(
        latency,
        Some(ok),
        "one latency observation per forwarded request"
    );
}
