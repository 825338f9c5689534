//! Agent guardrails on the real server: sessions, the velocity cap, the per-request ceiling,
//! the model allow-list, and the forecast.

use crate::helpers::*;
use agent_budget::money::Money;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::sync::Arc;

fn m(s: &str) -> Money {
    Money::parse(s).unwrap()
}

/// A Haiku 4.5 response costing `dollars` (output at $5/MTok), reserving little.
fn costing(dollars: &str) -> Value {
    let tokens = m(dollars).picos() / 5_000_000; // $5/MTok = 5,000,000 picodollars a token
    json!({"usage": {"input_tokens": 0, "output_tokens": tokens}})
}

async fn send_with(
    app: &TestApp,
    budget: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", "sk-test")
        .header("x-budget-id", budget)
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn error_of(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    (
        status,
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test]
async fn sessions_are_recorded_listed_newest_first_and_our_header_is_not_forwarded() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "agents", "max_dollars": "10"}))
        .await;
    let ours = [("x-agent-budget-session", "build-42")];
    let cc = [(
        "x-claude-code-session-id",
        "0f9c1a52-5b7e-4d1e-9a57-3c2b1d7e8f10",
    )];
    let script = |d: &str| costing(d).to_string();
    for (headers, model, dollars) in [
        (&ours[..], "claude-haiku-4-5", "0.01"),
        (&ours[..], "claude-sonnet-4-6", "0.02"),
        (&[][..], "claude-haiku-4-5", "0.04"),
        (&cc[..], "claude-haiku-4-5", "0.08"),
    ] {
        let s = script(dollars);
        let mut h = headers.to_vec();
        h.push(("x-mock", &s));
        assert_eq!(
            send_with(&app, "agents", &h, &body(model, 10))
                .await
                .status(),
            200
        );
    }
    let seen = app.mock.state.seen();
    assert!(
        seen.iter()
            .all(|s| !s.headers.contains_key("x-agent-budget-session"))
    );
    assert_eq!(
        seen[3].headers["x-claude-code-session-id"], cc[0].1,
        "Claude Code's header is forwarded"
    );

    let page = app.get("/api/budgets/agents/sessions").await;
    assert_eq!(page["total"], 2);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items[0]["session"], cc[0].1, "the most recently seen first");
    assert_eq!(
        (
            items[0]["spent_dollars"].as_str(),
            items[0]["requests"].as_u64()
        ),
        (Some("0.08"), Some(1))
    );
    let build = &items[1];
    assert_eq!(build["session"], "build-42");
    // 2,000 and 4,000 output tokens: $0.01 of Haiku and $0.06 of Sonnet ($15/MTok).
    assert_eq!(build["spent_dollars"], "0.07");
    assert_eq!(build["requests"], 2);
    assert_eq!(
        build["models"],
        json!(["claude-haiku-4-5", "claude-sonnet-4-6"])
    );
    assert!(
        build["first_seen"].as_str() < build["last_seen"].as_str()
            || build["first_seen"] == build["last_seen"]
    );
    let second = app
        .get("/api/budgets/agents/sessions?limit=1&offset=1")
        .await;
    assert_eq!(
        (
            second["items"][0]["session"].as_str(),
            second["total"].as_u64()
        ),
        (Some("build-42"), Some(2))
    );
    let records = app.usage("agents").await;
    let sessions: Vec<Value> = records.iter().map(|r| r["session"].clone()).collect();
    assert_eq!(
        sessions,
        [
            json!(cc[0].1),
            Value::Null,
            json!("build-42"),
            json!("build-42")
        ]
    );

    // A malformed session header: a clear 400, nothing forwarded or recorded.
    let before = app.mock.state.messages();
    let long = "x".repeat(201);
    let (status, msg) = error_of(
        send_with(
            &app,
            "agents",
            &[("x-agent-budget-session", &long)],
            &body("claude-haiku-4-5", 10),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        msg.contains("x-agent-budget-session") && msg.contains("200"),
        "{msg}"
    );
    assert_eq!(app.mock.state.messages(), before);
    assert_eq!(app.usage("agents").await.len(), 4);
    // Deleting the budget takes its sessions with it.
    app.client
        .delete(app.url("/api/budgets/agents"))
        .send()
        .await
        .unwrap();
    app.create_budget(json!({"name": "agents", "max_dollars": "10"}))
        .await;
    assert_eq!(app.get("/api/budgets/agents/sessions").await["total"], 0);
}

#[tokio::test]
async fn the_velocity_cap_blocks_what_would_exceed_the_last_hour_and_says_when_it_frees_up() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "fast", "max_dollars": "100", "max_dollars_per_hour": "1"}))
        .await;
    let r = app
        .send(
            Some("fast"),
            &body("claude-haiku-4-5", 10),
            Some(costing("0.6")),
        )
        .await;
    assert_eq!(r.status(), 200);
    // Haiku with 100,000 output tokens reserves $0.50: $0.60 + $0.50 > $1 in the hour.
    let before = Utc::now();
    let r = app
        .send(Some("fast"), &body("claude-haiku-4-5", 100_000), None)
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-should-retry"], "false");
    let retry: i64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (_, msg) = error_of(r).await;
    assert!(
        msg.contains("hourly rate (max_dollars_per_hour") && msg.contains("> $1.00"),
        "{msg}"
    );
    // The $0.60 leaves the window an hour after the second it settled in, just before `before`.
    assert!((3590..=3601).contains(&retry), "retry-after {retry}");
    let at = msg.rsplit("leaves the window at ").next().unwrap();
    let at: DateTime<Utc> = DateTime::parse_from_rfc3339(at)
        .unwrap()
        .with_timezone(&Utc);
    assert!((3590..=3601).contains(&(at - before).num_seconds()), "{at}");
    // What fits the hour's rest still passes.
    assert_eq!(
        app.send(Some("fast"), &body("claude-haiku-4-5", 10_000), None)
            .await
            .status(),
        200
    );
    // A request that alone exceeds the rate can never pass under strict admission: 400.
    let (status, msg) = error_of(
        app.send(Some("fast"), &body("claude-sonnet-4-6", 100_000), None)
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(msg.contains("'max_dollars_per_hour'"), "{msg}");
    let b = app.budget("fast").await;
    assert_eq!(b["blocked"], 2);
    assert_eq!(b["max_dollars_per_hour"], "1");
}

#[tokio::test]
async fn a_hundred_and_fifty_concurrent_requests_never_exceed_the_hourly_rate() {
    let app = Arc::new(spawn_app().await);
    app.create_budget(json!({"name": "burst", "max_dollars": "100", "max_dollars_per_hour": "1"}))
        .await;
    // Each reserves and then spends 6,000 × $5/MTok = $0.03 (plus a few input tokens): 33 fit.
    let script = json!({"usage": {"input_tokens": 0, "output_tokens": 6000}, "delay_ms": 20});
    let tasks: Vec<_> = (0..150)
        .map(|_| {
            let (app, script) = (app.clone(), script.clone());
            tokio::spawn(async move {
                app.send(Some("burst"), &body("claude-haiku-4-5", 6000), Some(script))
                    .await
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => {}
            other => panic!("status {other}"),
        }
    }
    let b = app.budget("burst").await;
    let hour = dollars(&b["burn_rate_per_hour"]);
    assert!(hour <= m("1"), "spent {hour} in the hour");
    assert_eq!(hour, dollars(&b["spent_dollars"]));
    assert!((20..=33).contains(&ok), "{ok} forwarded");
    assert_eq!(b["reserved_dollars"], "0");
}

#[tokio::test]
async fn the_per_request_ceiling_and_the_model_list_refuse_with_400_naming_the_rule() {
    let app = spawn_app().await;
    app.create_budget(
        json!({"name": "rules", "max_dollars": "100", "max_request_dollars": "0.10",
        "models": ["claude-haiku-4-5-20251001", "claude-sonnet-4-6"]}),
    )
    .await;
    let b = app.budget("rules").await;
    assert_eq!(
        b["models"],
        json!(["claude-haiku-4-5", "claude-sonnet-4-6"]),
        "stored as families"
    );
    // Sonnet with 32,000 output tokens could cost $0.48.
    let (status, msg) = error_of(
        app.send(Some("rules"), &body("claude-sonnet-4-6", 32_000), None)
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        msg.contains("'max_request_dollars'") && msg.contains("$0.10"),
        "{msg}"
    );
    let (status, msg) = error_of(
        app.send(Some("rules"), &body("claude-opus-4-8", 100), None)
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        msg.contains("claude-haiku-4-5, claude-sonnet-4-6") && msg.contains("'claude-opus-4-8'"),
        "{msg}"
    );
    assert_eq!(app.mock.state.messages(), 0, "nothing forwarded");
    // A dated id of an allowed family, under the ceiling, passes.
    assert_eq!(
        app.send(
            Some("rules"),
            &body("claude-haiku-4-5-20251001", 1000),
            None
        )
        .await
        .status(),
        200
    );
    let records = app.usage("rules").await;
    assert_eq!(
        records
            .iter()
            .filter(|r| r["status"] == "blocked" && r["http_status"] == 400)
            .count(),
        2
    );

    // Bad values change nothing; null clears.
    for bad in [
        json!({"models": []}),
        json!({"max_request_dollars": "0"}),
        json!({"max_dollars_per_hour": "-1"}),
        json!({"models": [""]}),
    ] {
        let r = app
            .client
            .patch(app.url("/api/budgets/rules"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let msg = r.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        let field = bad.as_object().unwrap().keys().next().unwrap().clone();
        assert!(msg.contains(&format!("'{field}'")), "{msg}");
    }
    assert_eq!(app.budget("rules").await["max_request_dollars"], "0.1");
    let r = app
        .client
        .patch(app.url("/api/budgets/rules"))
        .json(&json!({"models": null, "max_request_dollars": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.send(Some("rules"), &body("claude-opus-4-8", 32_000), None)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn the_forecast_follows_the_last_hours_rate_across_a_restart() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "burn", "max_dollars": "10"}))
        .await;
    let fresh = app.budget("burn").await;
    assert_eq!(
        (
            fresh["burn_rate_per_hour"].as_str(),
            fresh["projected_exhaustion_at"].clone()
        ),
        (Some("0"), Value::Null)
    );
    for _ in 0..2 {
        assert_eq!(
            app.send(
                Some("burn"),
                &body("claude-haiku-4-5", 10),
                Some(costing("0.5"))
            )
            .await
            .status(),
            200
        );
    }
    // $1 in the last hour, $9 left: the cap in nine hours.
    let check = |b: Value, before: DateTime<Utc>, after: DateTime<Utc>| {
        assert_eq!(b["burn_rate_per_hour"], "1");
        let at =
            DateTime::parse_from_rfc3339(b["projected_exhaustion_at"].as_str().unwrap()).unwrap();
        let nine = chrono::Duration::hours(9);
        assert!(
            at >= before + nine - chrono::Duration::milliseconds(1) && at <= after + nine,
            "{at}"
        );
    };
    let before = Utc::now();
    let b = app.budget("burn").await;
    check(b, before, Utc::now());
    let (mock, dir) = app.stop().await;
    let again = start_on(mock, dir, |_| {}).await;
    let before = Utc::now();
    let b = again.budget("burn").await;
    check(b, before, Utc::now());
}

#[tokio::test]
async fn a_runaway_loop_raises_an_alert_and_its_repeats_are_refused_when_the_guard_blocks() {
    let hook = crate::receiver::start(crate::receiver::Mode::Ok).await;
    let app = spawn_app().await;
    app.create_budget(
        json!({"name": "loops", "max_dollars": "10", "webhook_url": hook.url(),
        "loop_guard": {"repeats": 3, "minutes": 10, "action": "block"}}),
    )
    .await;
    assert_eq!(
        app.budget("loops").await["loop_guard"],
        json!({"repeats": 3, "minutes": 10, "action": "block"})
    );
    let same = |user: &str| {
        let mut b = body("claude-haiku-4-5", 10);
        b["metadata"] = json!({"user_id": user}); // metadata is not part of a request's identity
        b
    };
    for user in ["a", "b", "c"] {
        assert_eq!(
            app.send(Some("loops"), &same(user), None).await.status(),
            200
        );
    }
    let alerts = app.get("/api/alerts?budget=loops").await["items"]
        .as_array()
        .unwrap()
        .clone();
    let looped: Vec<&Value> = alerts.iter().filter(|a| a["kind"] == "loop").collect();
    assert_eq!(looped.len(), 1);
    let msg = looped[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("sent 3 times within 10 minutes") && msg.contains("claude-haiku-4-5"),
        "{msg}"
    );
    app.eventually("the loop alert is delivered", || async {
        hook.count() == 1
    })
    .await;

    let r = app.send(Some("loops"), &same("d"), None).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-should-retry"], "false");
    let retry: i64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((590..=600).contains(&retry), "retry-after {retry}");
    let (_, msg) = error_of(r).await;
    assert!(
        msg.contains("runaway loop") && msg.contains("'loop_guard'"),
        "{msg}"
    );
    assert_eq!(app.mock.state.messages(), 3, "the repeat was not forwarded");
    // Another request is not a repeat.
    let mut other = body("claude-haiku-4-5", 10);
    other["messages"] = json!([{"role": "user", "content": "something else"}]);
    assert_eq!(app.send(Some("loops"), &other, None).await.status(), 200);

    // Alert-only: the loop is reported and still forwarded.
    let r = app
        .client
        .patch(app.url("/api/budgets/loops"))
        .json(&json!({"loop_guard": {"repeats": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.send(Some("loops"), &same("e"), None).await.status(),
        200
    );
    // Bad guards change nothing.
    for bad in [
        json!({"repeats": 1}),
        json!({"minutes": 0}),
        json!({"action": "stop"}),
        json!({"every": 3}),
    ] {
        let r = app
            .client
            .patch(app.url("/api/budgets/loops"))
            .json(&json!({"loop_guard": bad}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let msg = r.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(msg.contains("loop_guard"), "{msg}");
    }
    assert_eq!(
        app.budget("loops").await["loop_guard"],
        json!({"repeats": 3, "minutes": 10, "action": "alert"})
    );
}
