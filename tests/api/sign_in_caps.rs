//! A sign-in approved with its own cap (docs/budgets.md): a scope below its budget that holds
//! across the sign-in's refreshed tokens (one spend, reservations in flight included) and
//! across restarts.

use crate::helpers::*;
use crate::sign_in::{admin_post, form, poll, start};
use agent_budget::config::Secret;
use serde_json::{Value, json};

const REAL: &str = "sk-ant-real-key-0123";

/// A request on a sign-in's token: `max_tokens` reserved, `output` charged (haiku: $5 per
/// million output tokens), or held open after three events when `held`.
async fn send(app: &TestApp, token: &str, max_tokens: u64, script: Value) -> reqwest::Response {
    let mut body = body("claude-haiku-4-5", max_tokens);
    if script["hang_after"].is_u64() {
        body["stream"] = json!(true);
    }
    reqwest::Client::new()
        .post(app.url("/v1/messages"))
        .bearer_auth(token)
        .header("x-mock", script.to_string())
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Starts a sign-in and approves it with `approval`: the answer.
async fn approve(app: &TestApp, approval: Value) -> (Value, reqwest::Response) {
    let code = start(app).await;
    let path = format!(
        "/api/sign-ins/{}/approve",
        code["user_code"].as_str().unwrap()
    );
    (code, admin_post(app, &path, approval).await)
}

async fn refresh(app: &TestApp, token: &Value) -> Value {
    let refresh = token["refresh_token"].as_str().unwrap();
    let r = form(
        app,
        "/oauth/token",
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn access(token: &Value) -> &str {
    token["access_token"].as_str().unwrap()
}

/// The sign-in's live key as the budget's key list shows it.
async fn live_key(app: &TestApp) -> Value {
    let keys = app.get("/api/budgets/dev/keys").await["items"].clone();
    let live: Vec<&Value> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["revoked_at"].is_null())
        .collect();
    assert_eq!(live.len(), 1, "{keys}");
    live[0].clone()
}

#[tokio::test]
async fn a_sign_ins_cap_holds_across_its_refreshed_tokens_and_restarts() {
    let app = spawn_with(|s| s.upstream_key = Some(Secret::new(REAL.into()))).await;
    app.create_budget(json!({"name": "dev", "max_dollars": "5", "period": "monthly"}))
        .await;
    let (code, r) = approve(
        &app,
        json!({"budget": "dev", "max_dollars": "0.5", "period": "daily"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let (status, first) = poll(&app, code["device_code"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{first}");
    let spend = send(&app, access(&first), 10, output_of(80_000)).await; // $0.40
    assert_eq!(spend.status(), 200);
    let key = live_key(&app).await;
    assert_eq!(
        (&key["kind"], &key["max_dollars"], &key["period"]),
        (&json!("sign_in"), &json!("0.5"), &json!("daily"))
    );
    assert_eq!(key["spent_dollars"], "0.4");
    // Claude Code is shown its fullest scope: the sign-in's own cap (80 %), not the budget's
    // (8 %), in each answer's usage-limit headers and in /usage.
    let r = send(&app, access(&first), 10, output_of(10)).await;
    assert_eq!(
        r.headers()["anthropic-ratelimit-unified-overage-utilization"],
        "0.8"
    );
    assert_eq!(
        r.headers()["anthropic-ratelimit-unified-status"],
        "allowed_warning"
    );
    let usage: Value = reqwest::Client::new()
        .get(app.url("/api/oauth/usage"))
        .bearer_auth(access(&first))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&usage["limits"][0]["group"], &usage["limits"][0]["percent"]),
        (&json!("daily"), &json!(80)),
        "{usage}"
    );

    // Refreshed: the new token has the same cap, and what the first one spent.
    let before = live_key(&app).await["spent_dollars"].clone();
    let second = refresh(&app, &first).await;
    let msg = refusal(
        send(&app, access(&second), 30_000, output_of(10)).await,
        429,
    )
    .await;
    assert!(
        msg.starts_with(
            "agent-budget: key 'claude_code sign-in' would exceed its daily cap: spent $0.4"
        ),
        "{msg}"
    );
    let key = live_key(&app).await;
    assert_eq!(
        (&key["max_dollars"], &key["spent_dollars"]),
        (&json!("0.5"), &before)
    );

    // A stream held open on the second token reserves its worst case …
    let held = send(
        &app,
        access(&second),
        16_000,
        json!({"hang_after": 3, "late_usage": true}),
    )
    .await;
    assert_eq!(held.status(), 200);
    // … and still counts once the token it was sent with is replaced.
    let third = refresh(&app, &second).await;
    let msg = refusal(send(&app, access(&third), 10_000, output_of(10)).await, 429).await;
    assert!(
        msg.contains(" + in flight $0.0") && !msg.contains("in flight $0.00"),
        "{msg}"
    );
    drop(held);
    app.eventually("the held stream settles", || async {
        send(&app, access(&third), 10_000, output_of(10))
            .await
            .status()
            == 200
    })
    .await;

    // Rebuilt at start-up from the records of all three tokens.
    let (mock, dir) = app.stop().await;
    let app = start_on(mock, dir, |s| {
        s.upstream_key = Some(Secret::new(REAL.into()))
    })
    .await;
    let msg = refusal(send(&app, access(&third), 30_000, output_of(10)).await, 429).await;
    assert!(msg.contains("key 'claude_code sign-in'"), "{msg}");
    let spent = dollars(&live_key(&app).await["spent_dollars"]);
    assert!(
        spent >= agent_budget::money::Money::parse("0.4").unwrap(),
        "{spent}"
    );
    assert_eq!(
        spent,
        dollars(&app.budget("dev").await["spent_dollars"]),
        "every charge of the budget was the sign-in's"
    );
}

#[tokio::test]
async fn a_bad_cap_leaves_the_sign_in_waiting_for_a_good_one() {
    let app = spawn_with(|s| s.upstream_key = Some(Secret::new(REAL.into()))).await;
    app.create_budget(json!({"name": "dev", "max_dollars": "5", "period": "weekly"}))
        .await;
    let (code, r) = approve(&app, json!({"budget": "nowhere", "max_dollars": "1"})).await;
    assert_eq!(r.status(), 404, "an unknown budget");
    let path = format!(
        "/api/sign-ins/{}/approve",
        code["user_code"].as_str().unwrap()
    );
    for (approval, says) in [
        (
            json!({"budget": "dev", "max_dollars": "0"}),
            "field 'max_dollars' must be greater than 0",
        ),
        (json!({"budget": "dev", "max_dollars": "-2"}), "max_dollars"),
        (
            json!({"budget": "dev", "period": "daily"}),
            "field 'period' needs 'max_dollars'",
        ),
        (
            json!({"budget": "dev", "max_dollars": "1", "period": "fortnightly"}),
            "period",
        ),
        (
            json!({"budget": "dev", "max_dollars": "1", "cap": "2"}),
            "cap",
        ),
    ] {
        let r = admin_post(&app, &path, approval.clone()).await;
        assert_eq!(r.status(), 400, "{approval}");
        let text = r.text().await.unwrap();
        assert!(text.contains(says), "{approval}: {text}");
    }
    let (status, _) = poll(&app, code["device_code"].as_str().unwrap()).await;
    assert_eq!(status, 400, "still waiting");
    assert!(
        app.get("/api/budgets/dev/keys").await["items"]
            .as_array()
            .unwrap()
            .is_empty(),
        "no key was made"
    );
    let r = admin_post(&app, &path, json!({"budget": "dev", "max_dollars": "1"})).await;
    assert_eq!(r.status(), 200);
    let key = live_key(&app).await;
    assert_eq!(
        (&key["max_dollars"], &key["period"]),
        (&json!("1"), &json!("weekly")),
        "the budget's period when none is given"
    );
}
