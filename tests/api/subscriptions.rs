//! Subscription windows (docs/subscriptions.md): a subscription's requests pass through
//! unchanged, and what the answers say of its 5-hour and weekly windows is shown, kept across
//! restarts, alerted on once per window and threshold, and paces budgets that ask for it.

use crate::helpers::*;
use crate::receiver::{self, Mode};
use serde_json::{Value, json};

const TOKEN: &str = "sk-ant-oat01-subscription-secret-0123456789";

/// A request as Claude Code sends it with a subscription: its OAuth token and beta.
pub async fn as_subscriber(
    app: &TestApp,
    budget: Option<&str>,
    unified: Value,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url("/v1/messages"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("anthropic-beta", "oauth-2025-04-20")
        .header("anthropic-version", "2023-06-01")
        .header("x-mock", json!({ "unified": unified }).to_string())
        .json(&body("claude-sonnet-4-5", 100));
    if let Some(b) = budget {
        req = req.header("x-budget-id", b);
    }
    req.send().await.unwrap()
}

pub fn five_hour(u: &str) -> Value {
    json!({ "5h-utilization": u })
}

#[tokio::test]
async fn a_subscriptions_windows_pass_through_and_are_shown_without_its_token() {
    let app = spawn_app().await;
    let r = as_subscriber(&app, None, json!({})).await;
    assert_eq!(r.status(), 200);
    // Untouched: the client sees the windows as Anthropic sent them.
    let h = r.headers();
    assert_eq!(h["anthropic-ratelimit-unified-5h-utilization"], "0.43");
    assert_eq!(h["anthropic-ratelimit-unified-7d-utilization"], "0.12");
    assert_eq!(h["anthropic-ratelimit-unified-status"], "allowed");
    let seen = &app.mock.state.seen()[0];
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {TOKEN}").as_str(),
        "the token goes upstream as sent"
    );
    let items = app.get("/api/subscriptions").await["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 1, "{items}");
    let s = &items[0];
    let account = s["account"].as_str().unwrap();
    assert_eq!(account.len(), 12);
    assert!(!TOKEN.contains(account));
    assert_eq!(s["five_hour"]["utilization"], 0.43);
    assert_eq!(s["five_hour"]["status"], "allowed");
    assert_eq!(s["seven_day"]["utilization"], 0.12);
    assert_eq!(s["representative_claim"], "five_hour");
    assert!(s["five_hour"]["resets_at"].as_str().is_some());
    assert!(s.get("overage").is_none());
    // An API key's answers are its rate limits, not a subscription.
    assert_eq!(
        app.send(None, &body("claude-haiku-4-5", 10), None)
            .await
            .status(),
        200
    );
    let limits = app.get("/api/rate-limits").await["items"].clone();
    assert_eq!(limits.as_array().unwrap().len(), 1, "{limits}");
    assert_eq!(limits[0]["requests"]["limit"], 50);
    assert_eq!(limits[0]["requests"]["remaining"], 49);
    assert_ne!(limits[0]["account"], account);
    // Kept across a restart; the token is in no file.
    let (mock, dir) = app.stop().await;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "the token was written to disk"
        );
    }
    let app = start_on(mock, dir, |_| {}).await;
    let again = app.get("/api/subscriptions").await["items"].clone();
    assert_eq!(again[0]["account"], account);
    assert_eq!(again[0]["five_hour"]["utilization"], 0.43);
}

#[tokio::test]
async fn each_window_alerts_once_per_threshold_and_instance() {
    let hook = receiver::start(Mode::Ok).await;
    let url = hook.url();
    let app = spawn_with(|s| s.subscription_webhook = Some(url)).await;
    for u in ["0.5", "0.81", "0.85", "0.96", "0.97", "1.02"] {
        assert_eq!(as_subscriber(&app, None, five_hour(u)).await.status(), 200);
    }
    // A new 5-hour window (it reset): its 80 % is a new alert.
    let next = json!({"5h-utilization": "0.9", "5h-reset": "4102444800"});
    assert_eq!(as_subscriber(&app, None, next).await.status(), 200);
    app.eventually("three deliveries", || async { hook.count() >= 3 })
        .await;
    let mut got: Vec<(String, u64, f64)> = hook
        .all()
        .iter()
        .map(|d| {
            let v: Value = serde_json::from_slice(&d.body).unwrap();
            assert!(d.headers.contains_key("x-agent-budget-signature"));
            assert_eq!(v["type"], "subscription_window");
            assert!(!v.to_string().contains(TOKEN));
            let w = v["window"].as_str().unwrap().to_string();
            (
                w,
                v["threshold"].as_u64().unwrap(),
                v["utilization"].as_f64().unwrap(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(
        got,
        vec![
            ("5-hour".into(), 80, 0.81),
            ("5-hour".into(), 80, 0.9),
            ("5-hour".into(), 95, 0.96)
        ]
    );
    assert_eq!(hook.count(), 3, "the weekly window (12 %) raised none");
    let delivered = r#"agent_budget_webhook_deliveries_total{outcome="delivered"} 3"#;
    assert!(
        app.metrics().await.contains(delivered),
        "counted in the metrics"
    );
}

#[tokio::test]
async fn a_budget_stops_at_its_share_of_a_window_and_not_before() {
    let app = spawn_app().await;
    app.create_budget(json!({
        "name": "agents", "max_dollars": "100",
        "max_subscription_utilization": {"five_hour": 0.8, "seven_day": 0.9}
    }))
    .await;
    assert_eq!(
        app.budget("agents").await["max_subscription_utilization"],
        json!({"five_hour": 0.8, "seven_day": 0.9})
    );
    // Nothing seen yet, then 79 %: admitted.
    assert_eq!(
        as_subscriber(&app, Some("agents"), five_hour("0.79"))
            .await
            .status(),
        200
    );
    assert_eq!(
        as_subscriber(&app, Some("agents"), five_hour("0.80"))
            .await
            .status(),
        200
    );
    // The last answer said 80 %: the next request is refused before it is sent.
    let sent = app.mock.state.messages();
    let r = as_subscriber(&app, Some("agents"), five_hour("0.5")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-should-retry"], "false");
    let wait: i64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 0 && wait <= 5 * 3600, "{wait}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "billing_error");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("budget 'agents' stops at 80 % of the subscription's 5-hour window")
            && msg.contains("it resets at"),
        "{msg}"
    );
    assert_eq!(app.mock.state.messages(), sent, "not forwarded");
    // Interactive work (another budget) goes on; so does an API key on this budget.
    assert_eq!(
        as_subscriber(&app, None, five_hour("0.81")).await.status(),
        200
    );
    assert_eq!(
        app.send(Some("agents"), &body("claude-haiku-4-5", 10), None)
            .await
            .status(),
        200
    );
    // The weekly share binds too.
    app.client
        .patch(app.url("/api/budgets/agents"))
        .json(&json!({"max_subscription_utilization": {"seven_day": 0.1}}))
        .send()
        .await
        .unwrap();
    let r = as_subscriber(&app, Some("agents"), json!({})).await;
    let msg = refusal(r, 429).await;
    assert!(
        msg.contains("10 % of the subscription's weekly window"),
        "{msg}"
    );
}

#[tokio::test]
async fn bad_window_shares_are_refused_naming_the_field() {
    let app = spawn_app().await;
    for bad in [
        json!({"five_hour": 1.5}),
        json!({"five_hour": 0}),
        json!({}),
        json!({"hourly": 0.5}),
        json!(0.8),
    ] {
        let r = app
            .client
            .post(app.url("/api/budgets"))
            .json(&json!({"name": "x", "max_dollars": "1", "max_subscription_utilization": bad}))
            .send()
            .await
            .unwrap();
        let msg = refusal(r, 400).await;
        assert!(msg.contains("max_subscription_utilization"), "{bad}: {msg}");
    }
}
