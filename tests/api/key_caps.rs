//! Keys with their own cap (docs/budgets.md): a scope below the budget, per developer under
//! a team budget; its spend is rebuilt from the records that name it.

use crate::helpers::*;
use agent_budget::config::Secret;
use serde_json::{Value, json};

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
    assert_eq!(send_keyed(&app, &alice, 10, 80_000).await.status(), 200); // $0.40
    // Up to $0.15 more: over alice's $0.50.
    let msg = refusal(send_keyed(&app, &alice, 30_000, 10).await, 429).await;
    assert!(
        msg.starts_with("agent-budget: key 'alice' would exceed its daily cap: spent $0.40"),
        "{msg}"
    );
    assert_eq!(
        send_keyed(&app, &bob, 30_000, 10).await.status(),
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
    assert_eq!(send_keyed(&app, &alice, 30_000, 10).await.status(), 429);
    assert_eq!(
        send_keyed(&app, &alice, 10, 10).await.status(),
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

/// A stream with `key`, held open after its first events: its worst case ($0.08) stays
/// reserved until it is dropped.
async fn hold_stream(app: &TestApp, key: &str) -> reqwest::Response {
    let mut stream = body("claude-haiku-4-5", 16_000);
    stream["stream"] = json!(true);
    let held = reqwest::Client::new()
        .post(app.url("/v1/messages"))
        .header("x-api-key", key)
        .header(
            "x-mock",
            json!({"hang_after": 3, "late_usage": true}).to_string(),
        )
        .json(&stream)
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    held
}

async fn patch(app: &TestApp, key_id: &Value, body: Value) -> reqwest::Response {
    let id = key_id
        .as_str()
        .map_or_else(|| key_id.to_string(), str::to_string);
    app.patch(&format!("/api/budgets/team/keys/{id}"), body)
        .await
}

async fn patched(app: &TestApp, key_id: &Value, body: Value) -> Value {
    let r = patch(app, key_id, body.clone()).await;
    assert_eq!(r.status(), 200, "{body}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_keys_cap_changes_while_it_is_in_use_and_counts_what_it_spent_and_holds() {
    let app =
        spawn_with(|s| s.upstream_key = Some(Secret::new("sk-ant-real-key-0123".into()))).await;
    app.create_budget(json!({"name": "team", "max_dollars": "10", "period": "monthly"}))
        .await;
    let made = app.create_key("team", "bob").await;
    let (bob, id) = (
        made["key"].as_str().unwrap().to_string(),
        made["id"].clone(),
    );
    assert_eq!(send_keyed(&app, &bob, 10, 80_000).await.status(), 200); // $0.40

    // Capped after the fact: what it spent this period counts at once.
    let view = patched(&app, &id, json!({"max_dollars": "0.5"})).await;
    assert_eq!(
        (
            &view["max_dollars"],
            &view["period"],
            &view["spent_dollars"]
        ),
        (&json!("0.5"), &json!("monthly"), &json!("0.4")),
        "the budget's period when none is given"
    );
    let msg = refusal(send_keyed(&app, &bob, 30_000, 10).await, 429).await;
    assert!(
        msg.starts_with("agent-budget: key 'bob' would exceed its monthly cap: spent $0.40"),
        "{msg}"
    );
    // Raised, with a period of its own.
    let view = patched(&app, &id, json!({"max_dollars": 1, "period": "daily"})).await;
    assert_eq!(
        (&view["max_dollars"], &view["period"]),
        (&json!("1"), &json!("daily"))
    );
    assert_eq!(send_keyed(&app, &bob, 30_000, 10).await.status(), 200);

    // Lowered while a stream holds its worst case: the hold counts against the new cap.
    let held = hold_stream(&app, &bob).await;
    patched(&app, &id, json!({"max_dollars": "0.6"})).await;
    let msg = refusal(send_keyed(&app, &bob, 30_000, 10).await, 429).await;
    assert!(
        msg.contains(" + in flight $0.0") && !msg.contains("in flight $0.00"),
        "{msg}"
    );
    drop(held);

    // Taken away: only the budget's caps apply.
    let view = patched(&app, &id, json!({"max_dollars": null})).await;
    assert_eq!(
        (&view["max_dollars"], &view["spent_dollars"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(send_keyed(&app, &bob, 30_000, 10).await.status(), 200);

    // Kept across a restart.
    patched(&app, &id, json!({"max_dollars": "0.5", "period": "weekly"})).await;
    let (mock, dir) = app.stop().await;
    let app = start_on(mock, dir, |s| {
        s.upstream_key = Some(Secret::new("sk-ant-real-key-0123".into()))
    })
    .await;
    let msg = refusal(send_keyed(&app, &bob, 30_000, 10).await, 429).await;
    assert!(
        msg.contains("key 'bob' would exceed its weekly cap"),
        "{msg}"
    );
}

#[tokio::test]
async fn bad_cap_changes_are_refused_and_change_nothing() {
    let app =
        spawn_with(|s| s.upstream_key = Some(Secret::new("sk-ant-real-key-0123".into()))).await;
    app.create_budget(json!({"name": "team", "max_dollars": "10"}))
        .await;
    let id = app.create_key("team", "bob").await["id"].clone();
    let capped = make_key(&app, json!({"name": "carol", "max_dollars": "2"})).await;
    let carol = capped.json::<Value>().await.unwrap()["id"].clone();
    for (key, change, status, says) in [
        (
            &id,
            json!({"period": "daily"}),
            400,
            "field 'period' needs 'max_dollars'",
        ),
        (
            &id,
            json!({"max_dollars": "0"}),
            400,
            "field 'max_dollars' must be greater than 0",
        ),
        (&id, json!({"max_dollars": "-1"}), 400, "max_dollars"),
        (
            &carol,
            json!({"max_dollars": null, "period": "daily"}),
            400,
            "field 'period' needs 'max_dollars'",
        ),
        (&carol, json!({"period": "hourly"}), 400, "period"),
        (&carol, json!({"cap": "1"}), 400, "cap"),
        (
            &json!("x"),
            json!({"max_dollars": "1"}),
            400,
            "'x' is not a key id",
        ),
        (
            &json!(999),
            json!({"max_dollars": "1"}),
            404,
            "budget 'team' has no key 999",
        ),
    ] {
        let r = patch(&app, key, change.clone()).await;
        assert_eq!(r.status(), status, "{change}");
        let text = r.text().await.unwrap();
        assert!(text.contains(says), "{change}: {text}");
    }
    let r = app
        .client
        .delete(app.url(&format!("/api/budgets/team/keys/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = patch(&app, &id, json!({"max_dollars": "1"})).await;
    assert_eq!(r.status(), 409, "a revoked key's cap");
    let keys = app.get("/api/budgets/team/keys").await["items"].clone();
    let caps: Vec<(&Value, &Value)> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (&k["max_dollars"], &k["period"]))
        .collect();
    assert_eq!(
        caps,
        [(&json!("2"), &json!("total")), (&Value::Null, &Value::Null)],
        "nothing changed"
    );
}

#[tokio::test]
async fn a_request_in_flight_when_its_key_is_first_capped_counts_when_it_settles() {
    let app =
        spawn_with(|s| s.upstream_key = Some(Secret::new("sk-ant-real-key-0123".into()))).await;
    app.create_budget(json!({"name": "team", "max_dollars": "10"}))
        .await;
    let made = app.create_key("team", "bob").await;
    let (bob, id) = (
        made["key"].as_str().unwrap().to_string(),
        made["id"].clone(),
    );
    let held = hold_stream(&app, &bob).await;
    let view = patched(&app, &id, json!({"max_dollars": "5"})).await;
    assert_eq!(view["spent_dollars"], "0", "nothing recorded yet");
    drop(held);
    app.eventually("the held stream settles", || async {
        dollars(&app.budget("team").await["reserved_dollars"]) == agent_budget::money::Money::ZERO
    })
    .await;
    let keys = app.get("/api/budgets/team/keys").await;
    let spent = dollars(&keys["items"][0]["spent_dollars"]);
    assert!(spent.is_positive(), "{keys}");
    assert_eq!(
        spent,
        dollars(&app.budget("team").await["spent_dollars"]),
        "its charge counts on the key's new scope, as its record will after a restart"
    );
}
