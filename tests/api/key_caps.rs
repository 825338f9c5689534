//! Keys with their own cap (docs/budgets.md): a scope below the budget, per developer under
//! a team budget; its spend is rebuilt from the records that name it.

use crate::helpers::*;
use agent_budget::config::Secret;
use serde_json::{Value, json};

async fn send(app: &TestApp, key: &str, max_tokens: u64, output: u64) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.url("/v1/messages"))
        .header("x-api-key", key)
        .header("x-mock", output_of(output).to_string())
        .json(&body("claude-haiku-4-5", max_tokens))
        .send()
        .await
        .unwrap()
}

async fn make_key(app: &TestApp, spec: Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/budgets/team/keys"))
        .json(&spec)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_key_with_its_own_cap_is_a_scope_below_its_budget() {
    let app =
        spawn_with(|s| s.upstream_key = Some(Secret::new("sk-ant-real-key-0123".into()))).await;
    app.create_budget(json!({"name": "team", "max_dollars": "10", "period": "monthly"}))
        .await;
    let r = make_key(
        &app,
        json!({"name": "alice", "max_dollars": "0.5", "period": "daily"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let alice = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let bob = app.create_key("team", "bob").await["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(send(&app, &alice, 10, 80_000).await.status(), 200); // $0.40
    // Up to $0.15 more: over alice's $0.50.
    let msg = refusal(send(&app, &alice, 30_000, 10).await, 429).await;
    assert!(
        msg.starts_with("agent-budget: key 'alice' would exceed its daily cap: spent $0.40"),
        "{msg}"
    );
    assert_eq!(
        send(&app, &bob, 30_000, 10).await.status(),
        200,
        "bob has only the budget's cap"
    );
    let keys = app.get("/api/budgets/team/keys").await["items"].clone();
    let of = |name: &str| {
        keys.as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            &of("alice")["max_dollars"],
            &of("alice")["period"],
            &of("alice")["spent_dollars"]
        ),
        (&json!("0.5"), &json!("daily"), &json!("0.4"))
    );
    assert_eq!(
        (&of("bob")["max_dollars"], &of("bob")["spent_dollars"]),
        (&Value::Null, &Value::Null)
    );
    // Rebuilt from the records that name the key.
    let (mock, dir) = app.stop().await;
    let app = start_on(mock, dir, |s| {
        s.upstream_key = Some(Secret::new("sk-ant-real-key-0123".into()))
    })
    .await;
    assert_eq!(send(&app, &alice, 30_000, 10).await.status(), 429);
    assert_eq!(
        send(&app, &alice, 10, 10).await.status(),
        200,
        "what fits goes"
    );
}

#[tokio::test]
async fn bad_key_caps_are_refused() {
    let app =
        spawn_with(|s| s.upstream_key = Some(Secret::new("sk-ant-real-key-0123".into()))).await;
    app.create_budget(json!({"name": "team", "max_dollars": "10"}))
        .await;
    for (spec, says) in [
        (
            json!({"name": "k", "max_dollars": "0"}),
            "field 'max_dollars'",
        ),
        (json!({"name": "k", "max_dollars": "-1"}), "max_dollars"),
        (
            json!({"name": "k", "period": "daily"}),
            "field 'period' needs 'max_dollars'",
        ),
        (
            json!({"name": "k", "max_dollars": "1", "period": "hourly"}),
            "period",
        ),
    ] {
        let r = make_key(&app, spec.clone()).await;
        assert_eq!(r.status(), 400, "{spec}");
        let text = r.text().await.unwrap();
        assert!(text.contains(says), "{spec}: {text}");
    }
    let keys = app.get("/api/budgets/team/keys").await;
    assert_eq!(keys["items"], json!([]), "nothing half-made");
}
