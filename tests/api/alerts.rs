//! Alerts: exactly once, durable signed webhooks, the alert log, badge, retention, events.

use crate::helpers::*;
use crate::receiver::{self, Mode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A Haiku 4.5 request that costs exactly `dollars` (output at $5/MTok) and reserves little.
fn costing(dollars: f64) -> (Value, Value) {
    let tokens = (dollars * 200_000.0).round() as u64;
    (
        body("claude-haiku-4-5", 10),
        json!({"usage": {"input_tokens": 0, "output_tokens": tokens}}),
    )
}

async fn alerts(app: &TestApp, query: &str) -> Vec<Value> {
    app.get(&format!("/api/alerts{query}")).await["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn concurrent_settlements_raise_each_threshold_once_and_deliver_it_signed() {
    let hook = receiver::start(Mode::Ok).await;
    let app = Arc::new(spawn_app().await);
    app.create_budget(
        json!({"name": "team", "max_dollars": "12", "period": "daily", "webhook_url": hook.url()}),
    )
    .await;
    let (b, script) = costing(0.05);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (app, b, script) = (app.clone(), b.clone(), script.clone());
            tokio::spawn(async move {
                app.send(Some("team"), &b, Some(script))
                    .await
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // $10 of $12 spent: 83 %, so 50 and 80 are reached, 100 is not.
    assert_eq!(app.budget("team").await["spent_dollars"], "10");
    let raised = alerts(&app, "?budget=team").await;
    let mut thresholds: Vec<u64> = raised
        .iter()
        .map(|a| a["threshold"].as_u64().unwrap())
        .collect();
    thresholds.sort_unstable();
    assert_eq!(thresholds, [50, 80]);
    assert!(
        raised
            .iter()
            .all(|a| a["kind"] == "threshold" && a["budget"] == "team" && a["cap_dollars"] == "12")
    );

    app.eventually("both alerts delivered", || async { hook.count() == 2 })
        .await;
    app.eventually("the log shows them delivered", || async {
        alerts(&app, "")
            .await
            .iter()
            .all(|a| a["delivery"] == "delivered" && a["deliveries"].as_array().unwrap().len() == 1)
    })
    .await;
    assert_eq!(app.get("/api/settings").await["team"], false);
    let secret = app.get("/api/settings").await["webhook_secret"]
        .as_str()
        .unwrap()
        .to_string();
    for d in hook.all() {
        let payload: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(
            (payload["period"].as_str(), payload["budget"].as_str()),
            (Some("daily"), Some("team"))
        );
        assert!(
            payload["resets_at"].as_str().is_some() && payload["period_start"].as_str().is_some()
        );
        assert_eq!(payload["breakdown"][0]["model"], "claude-haiku-4-5");
        let sig = d.headers["x-agent-budget-signature"].to_str().unwrap();
        assert!(
            verify_as_documented(&secret, &d.body, sig),
            "the documented recipes accept the signature"
        );
        assert!(
            !verify_as_documented(&secret, b"tampered", sig),
            "and refuse a different body"
        );
    }
}

/// Runs the Python and Node snippets of docs/webhooks.md on a delivery; true if both accept it.
fn verify_as_documented(secret: &str, body: &[u8], signature: &str) -> bool {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/webhooks.md")).unwrap();
    let block = |lang: &str| {
        doc.split(&format!("```{lang}\n"))
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap()
            .to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let body_path = dir.path().join("body");
    std::fs::write(&body_path, body).unwrap();
    let py = format!(
        "{}\nimport sys\nsys.exit(0 if verify({secret:?}, open({:?}, 'rb').read(), {signature:?}) else 1)\n",
        block("python"),
        body_path.to_str().unwrap()
    );
    let js = format!(
        "{}\nprocess.exit(verify({secret:?}, require('node:fs').readFileSync({:?}), {signature:?}) ? 0 : 1);\n",
        block("js"),
        body_path.to_str().unwrap()
    );
    let run = |cmd: &str, arg: &str, code: String| {
        std::process::Command::new(cmd)
            .args([arg, &code])
            .status()
            .unwrap()
            .success()
    };
    let (p, n) = (run("python3", "-c", py), run("node", "-e", js));
    assert_eq!(p, n, "the Python and Node recipes disagree");
    p
}

#[tokio::test]
async fn one_response_crossing_several_thresholds_raises_one_alert_each() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "team", "max_dollars": "1", "thresholds": [25, 50, 75, 100]}))
        .await;
    let (b, script) = costing(0.8);
    app.send(Some("team"), &b, Some(script)).await;
    let mut t: Vec<u64> = alerts(&app, "")
        .await
        .iter()
        .map(|a| a["threshold"].as_u64().unwrap())
        .collect();
    t.sort_unstable();
    assert_eq!(t, [25, 50, 75]);
    assert!(
        alerts(&app, "")
            .await
            .iter()
            .all(|a| a["delivery"] == "none"),
        "no webhook: nothing to deliver"
    );
}

#[tokio::test]
async fn the_first_block_in_a_period_and_each_unpriced_model_alert_once() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "tiny", "max_dollars": "0.01", "period": "weekly"}))
        .await;
    for _ in 0..3 {
        assert_eq!(
            app.send(Some("tiny"), &body("claude-sonnet-4-6", 32_000), None)
                .await
                .status(),
            429
        );
    }
    let blocked: Vec<Value> = alerts(&app, "")
        .await
        .into_iter()
        .filter(|a| a["kind"] == "blocked")
        .collect();
    assert_eq!(blocked.len(), 1);
    assert!(
        blocked[0]["message"]
            .as_str()
            .unwrap()
            .contains("blocked a request")
    );
    for _ in 0..2 {
        app.send(None, &body("claude-mystery-1", 5), None).await;
    }
    let unpriced: Vec<Value> = alerts(&app, "")
        .await
        .into_iter()
        .filter(|a| a["kind"] == "unpriced_model")
        .collect();
    assert_eq!(unpriced.len(), 1);
    assert_eq!(unpriced[0]["model"], "claude-mystery-1");
    assert_eq!(unpriced[0]["threshold"], Value::Null);
    // Across a restart, the same model does not alert again.
    let (mock, dir) = app.stop().await;
    let again = start_on(mock, dir, |s| s.time_zone = Some("Europe/Berlin".into())).await;
    again.send(None, &body("claude-mystery-1", 5), None).await;
    again
        .send(Some("tiny"), &body("claude-sonnet-4-6", 32_000), None)
        .await;
    assert_eq!(alerts(&again, "").await.len(), 2);
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_alert_after_a_retry() {
    let port = receiver::free_port();
    let app = spawn_app().await;
    let url = format!("http://127.0.0.1:{port}/hook");
    app.create_budget(json!({"name": "team", "max_dollars": "1", "webhook_url": url}))
        .await;
    let (b, script) = costing(0.6);
    app.send(Some("team"), &b, Some(script)).await;
    app.eventually("a failed first attempt", || async {
        alerts(&app, "")
            .await
            .first()
            .is_some_and(|a| a["deliveries"].as_array().unwrap().len() == 1)
    })
    .await;
    let a = &alerts(&app, "").await[0];
    assert_eq!(a["delivery"], "pending");
    assert!(a["deliveries"][0]["error"].as_str().is_some(), "{a}");
    let hook = receiver::start_on(port, Mode::Ok).await;
    app.eventually("delivery on the retry (about 5 s later)", || async {
        hook.count() == 1
    })
    .await;
    app.eventually("the log says delivered", || async {
        alerts(&app, "").await[0]["delivery"] == "delivered"
    })
    .await;
    assert_eq!(
        alerts(&app, "").await[0]["deliveries"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_hanging_receiver_does_not_slow_the_proxy() {
    let hook = receiver::start(Mode::Hang).await;
    let app = spawn_app().await;
    app.create_budget(
        json!({"name": "team", "max_dollars": "1", "thresholds": [1], "webhook_url": hook.url()}),
    )
    .await;
    let (b, script) = costing(0.02);
    app.send(Some("team"), &b, Some(script.clone())).await;
    app.eventually("the delivery to hang", || async { hook.count() == 1 })
        .await;
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(
            app.send(Some("team"), &body("claude-haiku-4-5", 10), None)
                .await
                .status(),
            200
        );
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(300),
        "a proxied request took {slowest:?} while a webhook hung"
    );
}

#[tokio::test]
async fn test_webhook_reports_what_the_receiver_said() {
    let hook = receiver::start(Mode::Ok).await;
    let app = spawn_app().await;
    app.create_budget(json!({"name": "team", "max_dollars": "5", "webhook_url": hook.url()}))
        .await;
    let r: Value = app
        .client
        .post(app.url("/api/budgets/team/test-webhook"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (r["delivered"].as_bool(), r["status"].as_u64()),
        (Some(true), Some(204))
    );
    assert_eq!(
        (r["alert"]["kind"].as_str(), r["alert"]["delivery"].as_str()),
        (Some("test"), Some("delivered"))
    );
    let got: Value = serde_json::from_slice(&hook.all()[0].body).unwrap();
    assert_eq!(got["kind"], "test");

    let down = format!("http://127.0.0.1:{}/hook", receiver::free_port());
    app.client
        .patch(app.url("/api/budgets/team"))
        .json(&json!({"webhook_url": down}))
        .send()
        .await
        .unwrap();
    let r: Value = app
        .client
        .post(app.url("/api/budgets/team/test-webhook"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["delivered"], false);
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("refused"),
        "{r}"
    );

    let none = app
        .client
        .post(app.url("/api/budgets/default/test-webhook"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 400);
}

async fn badge(app: &TestApp, q: &str) -> (String, String) {
    let r = app
        .client
        .get(app.url(&format!("/api/budgets/{q}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-cache, max-age=0");
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    (ct, r.text().await.unwrap())
}

fn parses_as_xml(svg: &str) -> bool {
    let code = "import sys, xml.dom.minidom; xml.dom.minidom.parseString(sys.stdin.buffer.read())";
    let mut child = std::process::Command::new("python3")
        .args(["-c", code])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), svg.as_bytes()).unwrap();
    drop(child.stdin.take());
    child.wait().unwrap().success()
}

#[tokio::test]
async fn badges_are_valid_svg_coloured_by_use() {
    let app = spawn_app().await;
    for (name, spend, colour) in [
        ("at-79", 0.79, "#4c1"),
        ("at-80", 0.8, "#dfb317"),
        ("at-100", 1.0, "#e05d44"),
    ] {
        app.create_budget(json!({"name": name, "max_dollars": "1"}))
            .await;
        let (b, script) = costing(spend);
        app.send(Some(name), &b, Some(script)).await;
        let (ct, svg) = badge(&app, &format!("{name}/badge")).await;
        assert!(ct.starts_with("image/svg+xml"));
        assert!(svg.contains(colour), "{name}: {svg}");
        assert!(parses_as_xml(&svg), "{svg}");
    }
    let (_, svg) = badge(&app, "at-80/badge?style=flat-square").await;
    assert!(svg.contains("rx=\"0\"") && svg.contains(&format!("{} / $1.00", "$0.80")));
    // Odd names: the budget name is a slug, but the badge must survive anything it renders.
    let long = format!("a{}", "-x".repeat(31));
    app.create_budget(json!({"name": long, "max_dollars": "1"}))
        .await;
    let (_, svg) = badge(&app, &format!("{long}/badge")).await;
    assert!(parses_as_xml(&svg));
    let width: f64 = svg
        .split("width=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        width > 63.0 * 4.0,
        "wide enough for a 63-character label: {width}"
    );
    let bad = app
        .client
        .get(app.url("/api/budgets/at-80/badge?style=3d"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[test]
fn badge_text_is_escaped() {
    use agent_budget::budget::{Budget, period};
    use agent_budget::ledger::{Status, Totals};
    use agent_budget::service::badge;
    let now = chrono::Utc::now();
    let status = Status {
        budget: Budget {
            id: 1,
            name: "<a & \"b\" 's' 預算>".into(),
            max_dollars: None,
            max_tokens: None,
            period: period::Period::Total,
            webhook_url: None,
            thresholds: vec![],
            admission: Default::default(),
            max_dollars_per_hour: None,
            max_request_dollars: None,
            models: None,
            loop_guard: None,
            parent: None,
            max_session_dollars: None,
            max_subscription_utilization: None,
            created_at: now,
        },
        window: period::window(period::Period::Total, now, now, period::Zone::Local),
        period: Totals::default(),
        reserved: agent_budget::money::Money::ZERO,
        reserved_tokens: 0,
        typical_worst_case: None,
        last_hour: agent_budget::money::Money::ZERO,
    };
    let svg = badge::render(&status, badge::Style::Flat);
    assert!(svg.contains("&lt;a &amp; &quot;b&quot; &apos;s&apos; 預算&gt;"));
    assert!(parses_as_xml(&svg));
}

#[tokio::test]
async fn retention_deletes_old_records_and_never_changes_totals() {
    let app = spawn_with(|s| s.retention_days = Some(30)).await;
    for i in 0..5u64 {
        let usage = json!({"usage": {"input_tokens": 1000 * (i + 1), "output_tokens": 10}});
        app.send(None, &body("claude-sonnet-4-6", 10), Some(usage))
            .await;
    }
    let before = app.budget("default").await;
    let stats_before = app.get("/api/stats").await;
    // Age the three oldest records by 31 days, directly in the database file.
    let db = rusqlite::Connection::open(app.dir.path().join("agent-budget.db")).unwrap();
    let aged = db
        .execute("UPDATE usage SET created_at = created_at - 31 * 86400000 WHERE id IN (SELECT id FROM usage ORDER BY id LIMIT 3)", [])
        .unwrap();
    assert_eq!(aged, 3);
    let deleted = app
        .server
        .as_ref()
        .unwrap()
        .service()
        .sweep_retention()
        .await
        .unwrap();
    assert_eq!(deleted, 3);
    let page = app.get("/api/budgets/default/usage").await;
    assert_eq!(page["total"], 2);
    let inputs: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["input_tokens"].as_u64().unwrap())
        .collect();
    assert_eq!(inputs, [5000, 4000], "the newest records stay");
    let after = app.budget("default").await;
    for k in ["spent_dollars", "spent_tokens", "requests"] {
        assert_eq!(after[k], before[k], "{k}");
    }
    assert_eq!(
        app.get("/api/stats").await["all_time"],
        stats_before["all_time"]
    );
}

#[tokio::test]
async fn a_sweep_stops_at_the_first_record_to_keep() {
    // A sweep reads from the oldest record and stops at the first one to keep, so it never
    // reads the whole table. An expired record behind it (its request started before an
    // older one finished) goes once the record in front of it has expired too.
    let app = spawn_with(|s| s.retention_days = Some(30)).await;
    for _ in 0..3 {
        app.send(None, &body("claude-sonnet-4-6", 10), None).await;
    }
    let db = rusqlite::Connection::open(app.dir.path().join("agent-budget.db")).unwrap();
    let age = |ids: &str| {
        db.execute(
            &format!(
                "UPDATE usage SET created_at = created_at - 31 * 86400000 WHERE id IN ({ids})"
            ),
            [],
        )
        .unwrap()
    };
    let ids: Vec<i64> = db
        .prepare("SELECT id FROM usage ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(age(&format!("{}, {}", ids[0], ids[2])), 2);
    let service = app.server.as_ref().unwrap().service();
    assert_eq!(service.sweep_retention().await.unwrap(), 1);
    assert_eq!(app.get("/api/budgets/default/usage").await["total"], 2);
    assert_eq!(age(&ids[1].to_string()), 1);
    assert_eq!(service.sweep_retention().await.unwrap(), 2);
    assert_eq!(app.get("/api/budgets/default/usage").await["total"], 0);
}

#[tokio::test]
async fn core_events_are_published() {
    use agent_budget::events::CoreEvent;
    let app = spawn_app().await;
    let mut events = app.server.as_ref().unwrap().service().events.subscribe();
    app.create_budget(json!({"name": "team", "max_dollars": "1", "thresholds": [50]}))
        .await;
    let (b, script) = costing(0.6);
    app.send(Some("team"), &b, Some(script)).await;
    let mut seen = Vec::new();
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(500), events.recv()).await {
        seen.push(e);
    }
    assert!(
        matches!(&seen[0], CoreEvent::BudgetCreated { budget, .. } if budget == "team"),
        "{seen:?}"
    );
    assert!(seen.iter().any(|e| matches!(e, CoreEvent::UsageRecorded { cost_dollars, .. } if cost_dollars.to_string() == "0.6")));
    assert!(seen.iter().any(|e| matches!(
        e,
        CoreEvent::AlertRaised {
            threshold: Some(50),
            ..
        }
    )));
}
