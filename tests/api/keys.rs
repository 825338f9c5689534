//! Virtual keys: a budget's own `sk-ab-` keys, swapped for the real key on the way upstream.

use crate::helpers::*;
use agent_budget::config::Secret;
use serde_json::{Value, json};

const REAL: &str = "sk-ant-real-key-0123";

async fn with_key() -> TestApp {
    spawn_with(|s| s.upstream_key = Some(Secret::new(REAL.into()))).await
}

async fn make_key(app: &TestApp, budget: &str, name: &str) -> Value {
    app.create_key(budget, name).await
}

async fn call(app: &TestApp, path: &str, auth: (&str, String)) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header(auth.0, auth.1)
        .json(&body("claude-haiku-4-5", 10))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_virtual_key_is_charged_to_its_budget_and_forwarded_with_the_real_key() {
    let app = with_key().await;
    app.create_budget(json!({"name": "agents", "max_dollars": "5"}))
        .await;
    let made = make_key(&app, "agents", "laptop").await;
    let key = made["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk-ab-") && key.len() == 70, "{key}");
    let listed = app.get("/api/budgets/agents/keys").await;
    assert_eq!(listed["items"][0]["name"], "laptop");
    assert!(listed["items"][0].get("key").is_none() && !listed.to_string().contains(&key));

    // As x-api-key, as a bearer token (the Python SDK's way), and on count_tokens.
    for (path, auth) in [
        ("/v1/messages", ("x-api-key", key.clone())),
        ("/v1/messages", ("authorization", format!("Bearer {key}"))),
        ("/v1/messages/count_tokens", ("x-api-key", key.clone())),
    ] {
        assert_eq!(call(&app, path, auth).await.status(), 200, "{path}");
    }
    for seen in app.mock.state.seen() {
        assert_eq!(seen.headers["x-api-key"], REAL, "{}", seen.path);
        assert!(seen.headers.get("authorization").is_none());
        assert!(
            !format!("{:?}", seen.headers).contains(&key),
            "the virtual key never goes upstream"
        );
    }
    assert_eq!(
        app.budget("agents").await["requests"],
        2,
        "charged to the key's budget"
    );
    assert_eq!(app.budget("default").await["requests"], 0);

    // Only a hash is stored.
    let (mock, dir) = app.stop().await;
    for f in ["agent-budget.db", "agent-budget.db-wal"] {
        let bytes = std::fs::read(dir.path().join(f)).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&key) && !text.contains(REAL),
            "{f} holds a key"
        );
    }
    // And the key still works after a restart.
    let again = start_on(mock, dir, |s| {
        s.upstream_key = Some(Secret::new(REAL.into()))
    })
    .await;
    assert_eq!(
        call(&again, "/v1/messages", ("x-api-key", key))
            .await
            .status(),
        200
    );
}

/// The `last_used_at` of each key the budget lists, by name.
async fn last_uses(app: &TestApp, budget: &str) -> std::collections::HashMap<String, Value> {
    let listed = app.get(&format!("/api/budgets/{budget}/keys")).await;
    listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap().to_string(),
                k["last_used_at"].clone(),
            )
        })
        .collect()
}

/// A key's `last_used_at` as saved in the database file, in milliseconds.
fn saved_use(app: &TestApp, name: &str) -> Option<i64> {
    let db = rusqlite::Connection::open(app.dir.path().join("agent-budget.db")).unwrap();
    db.query_row(
        "SELECT last_used_at FROM virtual_keys WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn a_keys_last_use_is_listed_at_once_saved_within_seconds_and_kept_when_revoked() {
    let app = with_key().await;
    app.create_budget(json!({"name": "agents", "max_dollars": "5"}))
        .await;
    let key = |v: Value| v["key"].as_str().unwrap().to_string();
    let used = key(make_key(&app, "agents", "used").await);
    let revoked = key(make_key(&app, "agents", "revoked").await);
    make_key(&app, "agents", "idle").await;
    assert!(last_uses(&app, "agents").await.values().all(Value::is_null));

    let before = chrono::Utc::now() - chrono::Duration::milliseconds(1);
    assert_eq!(
        call(&app, "/v1/messages", ("x-api-key", used.clone()))
            .await
            .status(),
        200
    );
    let listed = last_uses(&app, "agents").await;
    let at = chrono::DateTime::parse_from_rfc3339(listed["used"].as_str().unwrap()).unwrap();
    assert!(
        at >= before && at <= chrono::Utc::now(),
        "{at} is when it was used"
    );
    assert!(listed["idle"].is_null() && listed["revoked"].is_null());

    // Saved by the proxy as it runs, without a request writing it.
    app.eventually("the last use is saved", || async {
        saved_use(&app, "used") == Some(at.timestamp_millis())
    })
    .await;

    // A key revoked right after its use keeps it, though it is no longer in memory.
    let last_before_revoking = call(
        &app,
        "/v1/messages",
        ("authorization", format!("Bearer {revoked}")),
    );
    assert_eq!(last_before_revoking.await.status(), 200);
    let id = app.get("/api/budgets/agents/keys").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "revoked")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let r = app
        .client
        .delete(app.url(&format!("/api/budgets/agents/keys/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(saved_use(&app, "revoked").is_some(), "saved when revoked");
    // Used again just before a shutdown, which saves what the last save missed.
    let again = call(&app, "/v1/messages", ("x-api-key", used.clone()));
    assert_eq!(again.await.status(), 200);
    let listed = last_uses(&app, "agents").await;
    let later = chrono::DateTime::parse_from_rfc3339(listed["used"].as_str().unwrap()).unwrap();
    assert!(later >= at, "{later} is the second use");

    let (mock, dir) = app.stop().await;
    let db = rusqlite::Connection::open(dir.path().join("agent-budget.db")).unwrap();
    let saved: i64 = db
        .query_row(
            "SELECT last_used_at FROM virtual_keys WHERE name = 'used'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(saved, later.timestamp_millis(), "saved at shutdown");
    let again = start_on(mock, dir, |s| {
        s.upstream_key = Some(Secret::new(REAL.into()))
    })
    .await;
    assert_eq!(
        last_uses(&again, "agents").await,
        listed,
        "kept across a restart"
    );
}

#[tokio::test]
async fn revoked_unknown_and_orphaned_keys_are_refused_and_nothing_is_forwarded() {
    let app = with_key().await;
    app.create_budget(json!({"name": "agents", "max_dollars": "5"}))
        .await;
    let made = make_key(&app, "agents", "ci").await;
    let (id, key) = (
        made["id"].as_i64().unwrap(),
        made["key"].as_str().unwrap().to_string(),
    );
    let revoke = || {
        app.client
            .delete(app.url(&format!("/api/budgets/agents/keys/{id}")))
            .send()
    };
    assert_eq!(revoke().await.unwrap().status(), 204);
    let twice = revoke().await.unwrap();
    assert_eq!(twice.status(), 409);
    let msg = twice.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("already revoked"), "{msg}");
    assert!(app.get("/api/budgets/agents/keys").await["items"][0]["revoked_at"].is_string());

    let refused = |k: String| async { call(&app, "/v1/messages", ("x-api-key", k)).await };
    for k in [key, "sk-ab-unknown".to_string()] {
        let r = refused(k).await;
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["x-should-retry"], "false");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["type"], "authentication_error");
    }
    // Deleting a budget revokes its keys.
    app.create_budget(json!({"name": "gone", "max_dollars": "5"}))
        .await;
    let orphan = make_key(&app, "gone", "x").await["key"]
        .as_str()
        .unwrap()
        .to_string();
    app.client
        .delete(app.url("/api/budgets/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused(orphan).await.status(), 401);
    assert_eq!(app.mock.state.messages(), 0, "nothing was forwarded");

    // Bad input: clear errors, nothing made.
    for (path, body, status) in [
        ("/api/budgets/agents/keys", json!({"name": ""}), 400),
        (
            "/api/budgets/agents/keys",
            json!({"name": "a", "extra": 1}),
            400,
        ),
        ("/api/budgets/nope/keys", json!({"name": "a"}), 404),
    ] {
        let r = app
            .client
            .post(app.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
    }
    let r = app
        .client
        .delete(app.url("/api/budgets/agents/keys/abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        app.get("/api/budgets/agents/keys").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn without_a_real_key_or_with_require_virtual_key_the_proxy_says_what_to_set() {
    let plain = spawn_app().await;
    plain
        .create_budget(json!({"name": "agents", "max_dollars": "5"}))
        .await;
    let key = make_key(&plain, "agents", "x").await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = call(&plain, "/v1/messages", ("x-api-key", key)).await;
    assert_eq!(r.status(), 401);
    let msg = r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("--upstream-key-file"), "{msg}");

    let strict = spawn_with(|s| {
        s.upstream_key = Some(Secret::new(REAL.into()));
        s.require_virtual_key = true;
    })
    .await;
    strict
        .create_budget(json!({"name": "agents", "max_dollars": "5"}))
        .await;
    let r = call(&strict, "/v1/messages", ("x-api-key", "sk-ant-own".into())).await;
    assert_eq!(r.status(), 401);
    let key = make_key(&strict, "agents", "x").await["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        call(&strict, "/v1/messages", ("x-api-key", key))
            .await
            .status(),
        200
    );
    assert_eq!(strict.mock.state.messages(), 1);
}

#[tokio::test]
async fn with_the_keychain_off_settings_says_how_to_give_a_key() {
    let app = spawn_app().await;
    let url = app.url("/api/settings/upstream-key");
    assert_eq!(
        app.get("/api/settings/upstream-key").await,
        json!({"source": null, "last4": null, "keychain": false})
    );
    let put = app
        .client
        .put(&url)
        .json(&json!({"key": "sk-ant-x-1234"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 503);
    assert!(put.text().await.unwrap().contains("--no-keychain"));
    for (bad, says) in [
        (json!({"key": "sk-ab-1234"}), "virtual key"),
        (json!({"key": ""}), "field 'key'"),
        (json!({"key": "sk-ant-1", "extra": 1}), "unknown field"),
    ] {
        let r = app.client.put(&url).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains(says), "{bad}");
    }
    let del = app.client.delete(&url).send().await.unwrap();
    assert_eq!(del.status(), 503);
    assert_eq!(
        app.get("/api/settings/upstream-key").await["source"],
        Value::Null
    );
}
