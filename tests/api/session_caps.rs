//! `max_session_dollars` (docs/budgets.md): each agent session's spend within the budget's
//! period is capped; the refusal names the session; the figure survives a restart.

use crate::helpers::*;
use serde_json::{Value, json};

async fn turn(app: &TestApp, session: &str, max_tokens: u64, output: u64) -> reqwest::Response {
    app.client
        .post(app.url("/v1/messages"))
        .header("x-api-key", "sk-test")
        .header("x-budget-id", "agents")
        .header("x-agent-budget-session", session)
        .header("x-mock", output_of(output).to_string())
        .json(&body("claude-haiku-4-5", max_tokens))
        .send()
        .await
        .unwrap()
}

fn period_dollars(page: &Value, session: &str) -> Value {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session"] == session)
        .map(|s| s["period_dollars"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn each_session_is_held_to_its_cap_and_the_refusal_names_it() {
    let app = spawn_app().await;
    let b = app
        .create_budget(json!({"name": "agents", "max_dollars": "10", "period": "daily", "max_session_dollars": "0.5"}))
        .await;
    assert_eq!(b["max_session_dollars"], "0.5");
    assert_eq!(turn(&app, "build-1", 10, 80_000).await.status(), 200); // $0.40
    // $0.10 left for build-1: a worst case of $0.15 is refused, naming the session.
    let msg = refusal(turn(&app, "build-1", 30_000, 10).await, 429).await;
    assert!(
        msg.starts_with("agent-budget: budget 'agents' would exceed its per-session cap (max_session_dollars) for session 'build-1': spent $0.40"),
        "{msg}"
    );
    assert_eq!(
        turn(&app, "build-2", 30_000, 10).await.status(),
        200,
        "another session has its own"
    );
    let page = app.get("/api/budgets/agents/sessions").await;
    assert_eq!(period_dollars(&page, "build-1"), "0.4");
    // After a restart the session's spend this period is read back from its records.
    let (mock, dir) = app.stop().await;
    let app = start_on(mock, dir, |_| {}).await;
    assert_eq!(turn(&app, "build-1", 30_000, 10).await.status(), 429);
    assert_eq!(
        turn(&app, "build-1", 10, 10).await.status(),
        200,
        "what fits goes"
    );
}

#[tokio::test]
async fn a_cap_set_mid_period_counts_what_sessions_already_spent() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "agents", "max_dollars": "10", "period": "daily"}))
        .await;
    assert_eq!(turn(&app, "s", 10, 80_000).await.status(), 200); // $0.40
    assert_eq!(
        period_dollars(&app.get("/api/budgets/agents/sessions").await, "s"),
        Value::Null
    );
    let r = app
        .client
        .patch(app.url("/api/budgets/agents"))
        .json(&json!({"max_session_dollars": "0.5"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(turn(&app, "s", 30_000, 10).await.status(), 429);
    let r = app
        .client
        .patch(app.url("/api/budgets/agents"))
        .json(&json!({"max_session_dollars": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a cap must be greater than 0");
}
