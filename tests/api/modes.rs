//! Admission that agents can live with: a stream's reservation shrinks to its exact prompt at
//! `message_start`; `admission: "clamp"` lowers `max_tokens` to fit; budgets report the worst
//! case of their typical request. The cap holds in every mode.

use crate::helpers::*;
use serde_json::{Value, json};
use std::sync::Arc;

/// A cached ~70 KB prompt for Opus 4.8: its estimate is priced at the 1-hour write rate.
fn cached_prompt(stream: bool) -> Value {
    json!({"model": "claude-opus-4-8", "max_tokens": 32000, "stream": stream,
        "system": [{"type": "text", "text": "word ".repeat(14_000), "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "go on"}]})
}

/// What the API reports for that prompt once cached: 100 new tokens, 9,000 read from cache.
fn cached_usage() -> Value {
    json!({"input_tokens": 100, "cache_read_input_tokens": 9000, "output_tokens": 300})
}

async fn reserved(app: &TestApp, budget: &str) -> agent_budget::money::Money {
    dollars(&app.budget(budget).await["reserved_dollars"])
}

#[tokio::test]
async fn a_streams_reservation_shrinks_to_its_exact_prompt_at_message_start() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "probe", "max_dollars": "100"}))
        .await;
    // Without usage in message_start (held to the end), the reservation stays the worst case.
    let late = json!({"usage": cached_usage(), "hang_after": 3, "late_usage": true});
    let held = app
        .send(Some("probe"), &cached_prompt(true), Some(late.clone()))
        .await;
    assert_eq!(held.status(), 200);
    app.eventually("the stream is admitted", || async {
        reserved(&app, "probe").await.is_positive()
    })
    .await;
    let worst = reserved(&app, "probe").await;
    // 100 × $5 + 9,000 × $0.50 + 32,000 × $25 per MTok: the exact prompt and all the output.
    let exact = agent_budget::money::Money::parse("0.805").unwrap();
    assert!(
        worst > exact + exact.scale(1, 20),
        "the estimate at the write rate: {worst}"
    );
    drop(held);
    app.eventually("the aborted stream settles", || async {
        reserved(&app, "probe").await == Default::default()
    })
    .await;

    // A cap that fits one worst case and one exact one, not two worst cases.
    let cap = worst + exact + agent_budget::money::Money::parse("0.001").unwrap();
    assert!(cap < worst + worst);
    // A second request that count_tokens cannot talk into fitting.
    let second = json!({"count": 1_000_000});
    for (name, script) in [
        ("strict", late),
        ("early", json!({"usage": cached_usage(), "hang_after": 3})),
    ] {
        app.create_budget(json!({"name": name, "max_dollars": cap.to_string()}))
            .await;
        let open = app
            .send(Some(name), &cached_prompt(true), Some(script))
            .await;
        assert_eq!(open.status(), 200);
        if name == "early" {
            app.eventually("the reservation shrinks to the exact prompt", || async {
                reserved(&app, name).await == exact
            })
            .await;
        } else {
            app.eventually("the stream is admitted", || async {
                reserved(&app, name).await == worst
            })
            .await;
        }
        let r = app
            .send(Some(name), &cached_prompt(false), Some(second.clone()))
            .await;
        let want = if name == "early" { 200 } else { 429 };
        assert_eq!(r.status(), want, "{name}: the second request");
        drop(open);
    }
}

#[tokio::test]
async fn a_clamped_request_is_forwarded_with_the_largest_max_tokens_that_fits() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "agents", "max_dollars": "0.50", "admission": "clamp"}))
        .await;
    assert_eq!(app.budget("agents").await["admission"], "clamp");
    // Opus 4.8 with 32,000 output tokens reserves $0.80: over the cap, so it is clamped.
    let body = br#"{"model":"claude-opus-4-8","max_tokens":32000,"messages":[{"role":"user","content":"Hello"}],"metadata":{"user_id":"u1"}}"#;
    let r = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", "sk-test")
        .header("x-budget-id", "agents")
        .header("content-type", "application/json")
        .header("x-mock", json!({"usage": {"input_tokens": 10, "output_tokens": 90000}, "stop_at_max_tokens": true}).to_string())
        .body(&body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let n: u64 = r.headers()["x-agent-budget-clamped-max-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let reply: Value = r.json().await.unwrap();
    assert_eq!(reply["stop_reason"], "max_tokens");
    assert_eq!(reply["usage"]["output_tokens"], n);
    assert!((1024..32_000).contains(&n), "clamped to {n}");

    // Upstream got the same bytes but for that one number.
    let seen = app.mock.state.seen();
    let sent = seen.last().unwrap();
    let want = String::from_utf8_lossy(body).replace("32000", &n.to_string());
    assert_eq!(String::from_utf8_lossy(&sent.body), want);

    let rec = &app.usage("agents").await[0];
    assert_eq!(rec["clamped_max_tokens"], n);
    let worst = dollars(&rec["worst_case_dollars"]);
    let cap = agent_budget::money::Money::parse("0.50").unwrap();
    let token = agent_budget::money::Money::parse("0.000025").unwrap();
    assert!(
        worst <= cap && worst + token > cap,
        "{n} is the largest that fits: {worst}"
    );
    let b = app.budget("agents").await;
    assert!(dollars(&b["spent_dollars"]) <= cap);

    // What is left ($0.50 − 10 × $5 − n × $25 per MTok) is below the floor's worst case.
    let r = app.send(Some("agents"), &body_json(), None).await;
    assert_eq!(r.status(), 429);
    assert!(
        r.headers()
            .get("x-agent-budget-clamped-max-tokens")
            .is_none()
    );
}

fn body_json() -> Value {
    body("claude-opus-4-8", 32_000)
}

#[tokio::test]
async fn a_clamp_never_goes_below_the_floor_or_the_thinking_budget() {
    let app = spawn_app().await;
    // $0.02 leaves room for ~790 output tokens of Opus: below the floor of 1,024.
    app.create_budget(json!({"name": "small", "max_dollars": "0.02", "admission": "clamp"}))
        .await;
    let r = app.send(Some("small"), &body_json(), None).await;
    assert_eq!(r.status(), 429);
    assert_eq!(app.mock.state.messages(), 0);

    // $0.30 leaves ~12,000: fine unless thinking needs more than that.
    app.create_budget(json!({"name": "think", "max_dollars": "0.30", "admission": "clamp"}))
        .await;
    let mut thinking = body_json();
    thinking["thinking"] = json!({"type": "enabled", "budget_tokens": 16000});
    assert_eq!(app.send(Some("think"), &thinking, None).await.status(), 429);
    thinking["thinking"]["budget_tokens"] = json!(4000);
    let r = app.send(Some("think"), &thinking, None).await;
    assert_eq!(r.status(), 200);
    let n: u64 = r.headers()["x-agent-budget-clamped-max-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n > 4000 && n < 12_000, "{n}");
    // Strict budgets never clamp.
    app.create_budget(json!({"name": "strict", "max_dollars": "0.30"}))
        .await;
    assert_eq!(
        app.send(Some("strict"), &body_json(), None).await.status(),
        429
    );
}

#[tokio::test]
async fn two_hundred_concurrent_clamped_requests_never_push_spend_over_the_cap() {
    let app = Arc::new(spawn_app().await);
    app.create_budget(json!({"name": "swarm", "max_dollars": "5", "admission": "clamp"}))
        .await;
    // Every reply uses all the output it is allowed, and takes a while, so they overlap.
    let script = json!({"usage": {"input_tokens": 50, "output_tokens": 200000}, "stop_at_max_tokens": true, "delay_ms": 50});
    let tasks: Vec<_> = (0..250)
        .map(|_| {
            let (app, script) = (app.clone(), script.clone());
            tokio::spawn(async move {
                let r = app.send(Some("swarm"), &body_json(), Some(script)).await;
                let clamped = r
                    .headers()
                    .contains_key("x-agent-budget-clamped-max-tokens");
                (r.status().as_u16(), clamped)
            })
        })
        .collect();
    let (mut ok, mut clamped, mut blocked) = (0, 0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (200, c) => {
                ok += 1;
                clamped += u32::from(c);
            }
            (429, _) => blocked += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let b = app.budget("swarm").await;
    let spent = dollars(&b["spent_dollars"]);
    assert!(
        spent <= agent_budget::money::Money::parse("5").unwrap(),
        "spent {spent}"
    );
    assert_eq!(b["reserved_dollars"], "0");
    assert!(
        ok >= 6 && clamped >= 1 && blocked >= 1,
        "{ok} ok, {clamped} clamped, {blocked} blocked"
    );
    let records = app.get("/api/budgets/swarm/usage?limit=500").await;
    let sum = records["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| dollars(&r["cost_dollars"]))
        .fold(agent_budget::money::Money::ZERO, |a, b| a + b);
    assert_eq!(sum, spent, "the records add up to the spend");
}

#[tokio::test]
async fn admission_must_be_strict_or_clamp_and_a_bad_value_changes_nothing() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/api/budgets"))
        .json(&json!({"name": "x", "max_dollars": "1", "admission": "lenient"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let msg = r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("'admission'") && msg.contains("strict") && msg.contains("clamp"),
        "{msg}"
    );
    assert_eq!(
        app.client
            .get(app.url("/api/budgets/x"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    app.create_budget(json!({"name": "y", "max_dollars": "1"}))
        .await;
    let r = app
        .client
        .patch(app.url("/api/budgets/y"))
        .json(&json!({"max_dollars": "2", "admission": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b = app.budget("y").await;
    assert_eq!(
        (b["admission"].as_str(), b["max_dollars"].as_str()),
        (Some("strict"), Some("1"))
    );
    let r = app
        .client
        .patch(app.url("/api/budgets/y"))
        .json(&json!({"admission": "clamp"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.budget("y").await["admission"], "clamp");
}

#[tokio::test]
async fn a_budget_reports_its_typical_worst_case_and_how_many_fit_across_restarts() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "sized", "max_dollars": "10"}))
        .await;
    let b = app.budget("sized").await;
    assert_eq!(
        (
            b["worst_case_dollars"].clone(),
            b["requests_that_fit"].clone()
        ),
        (Value::Null, Value::Null)
    );
    for _ in 0..3 {
        let r = app
            .send(Some("sized"), &body("claude-sonnet-4-6", 32_000), None)
            .await;
        assert_eq!(r.status(), 200);
    }
    let records = app.usage("sized").await;
    let worst = dollars(&records[0]["worst_case_dollars"]);
    assert!(
        records
            .iter()
            .all(|r| dollars(&r["worst_case_dollars"]) == worst)
    );
    let b = app.budget("sized").await;
    assert_eq!(dollars(&b["worst_case_dollars"]), worst);
    let left = dollars(&b["remaining_dollars"]);
    let fit = b["requests_that_fit"].as_u64().unwrap();
    assert!(
        worst.scale(fit as i64, 1) <= left && worst.scale(fit as i64 + 1, 1) > left,
        "{fit} of {worst} in {left}"
    );

    let (mock, dir) = app.stop().await;
    let again = start_on(mock, dir, |_| {}).await;
    assert_eq!(
        dollars(&again.budget("sized").await["worst_case_dollars"]),
        worst
    );
}
