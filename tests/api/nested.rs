//! Budgets that nest (docs/budgets.md): a request fits its budget and every ancestor, is
//! reserved and settled on all of them; refusals name the scope; bad trees are refused.

use crate::helpers::*;
use agent_budget::config::Secret;
use agent_budget::money::Money;
use serde_json::{Value, json};

/// `total` ($1 a day) above `a` ($0.80) and `b` (no cap of its own).
async fn tree() -> TestApp {
    let app =
        spawn_with(|s| s.upstream_key = Some(Secret::new("sk-ant-real-key-0123".into()))).await;
    app.create_budget(json!({"name": "total", "max_dollars": "1", "period": "daily"}))
        .await;
    app.create_budget(
        json!({"name": "a", "max_dollars": "0.8", "period": "daily", "parent": "total"}),
    )
    .await;
    let b = app
        .create_budget(json!({"name": "b", "parent": "total"}))
        .await;
    assert_eq!(
        (&b["parent"], &b["max_dollars"]),
        (&json!("total"), &Value::Null)
    );
    app
}

async fn send_to(app: &TestApp, budget: &str, max_tokens: u64, output: u64) -> reqwest::Response {
    app.send(
        Some(budget),
        &body("claude-haiku-4-5", max_tokens),
        Some(output_of(output)),
    )
    .await
}

#[tokio::test]
async fn a_request_must_fit_every_scope_above_its_budget_and_the_refusal_names_the_scope() {
    let app = tree().await;
    assert_eq!(send_to(&app, "b", 10, 180_000).await.status(), 200); // $0.90
    assert_eq!(
        dollars(&app.budget("total").await["spent_dollars"]).to_string(),
        "0.9"
    );
    // `a` has spent nothing of its $0.80, but `total` has $0.10 left: $0.15 does not fit.
    let msg = refusal(send_to(&app, "a", 30_000, 10).await, 429).await;
    assert!(
        msg.starts_with("agent-budget: budget 'total' (above 'a') would exceed its daily cap"),
        "{msg}"
    );
    assert_eq!(
        send_to(&app, "a", 10, 10).await.status(),
        200,
        "what fits goes"
    );
    let detail = app.get("/api/budgets/total").await;
    assert_eq!(detail["children"], json!(["a", "b"]));
    assert_eq!(
        app.get("/api/budgets/a").await["ancestors"],
        json!(["total"])
    );
}

#[tokio::test]
async fn a_parents_spend_is_its_subtrees_and_is_rebuilt_after_a_restart_or_a_move() {
    let app = tree().await;
    assert_eq!(send_to(&app, "a", 10, 20_000).await.status(), 200); // $0.10
    assert_eq!(send_to(&app, "b", 10, 60_000).await.status(), 200); // $0.30
    let spent = |v: Value| dollars(&v["spent_dollars"]).to_string();
    assert_eq!(spent(app.budget("total").await), "0.4");
    let (mock, dir) = app.stop().await;
    let app = start_on(mock, dir, |_| {}).await;
    assert_eq!(
        spent(app.budget("total").await),
        "0.4",
        "rebuilt from the records"
    );
    assert_eq!(spent(app.budget("a").await), "0.1");
    // `b` moves under a new parent: its spend goes with it.
    app.create_budget(json!({"name": "other", "max_dollars": "5"}))
        .await;
    let r = app
        .patch("/api/budgets/b", json!({"parent": "other"}))
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(spent(app.budget("total").await), "0.1");
    assert_eq!(spent(app.budget("other").await), "0.3");
}

#[tokio::test]
async fn a_request_in_flight_when_its_budget_moves_is_charged_under_the_new_parent() {
    let app = tree().await;
    app.create_budget(json!({"name": "other", "max_dollars": "5"}))
        .await;
    let mut stream = body("claude-haiku-4-5", 16_000);
    stream["stream"] = json!(true);
    let script = json!({"hang_after": 3, "late_usage": true});
    let held = app.send(Some("b"), &stream, Some(script)).await;
    assert_eq!(held.status(), 200);
    let r = app
        .patch("/api/budgets/b", json!({"parent": "other"}))
        .await;
    assert_eq!(r.status(), 200);
    drop(held);
    let figures = |v: Value| {
        (
            dollars(&v["spent_dollars"]),
            dollars(&v["reserved_dollars"]),
        )
    };
    app.eventually("the held stream settles", || async {
        figures(app.budget("b").await).1 == Money::ZERO
    })
    .await;
    let (b, total, other) = (
        figures(app.budget("b").await),
        figures(app.budget("total").await),
        figures(app.budget("other").await),
    );
    assert!(b.0.is_positive(), "{b:?}");
    assert_eq!(other, b, "charged under its new parent, nothing left held");
    assert_eq!(
        total,
        (Money::ZERO, Money::ZERO),
        "its old parent freed its hold"
    );
    // The same figures a rebuild from the records gives.
    let (mock, dir) = app.stop().await;
    let app = start_on(mock, dir, |_| {}).await;
    assert_eq!(figures(app.budget("other").await), other);
    assert_eq!(figures(app.budget("total").await), total);
}

async fn refused(r: reqwest::Response, status: u16, says: &str) {
    let msg = refusal(r, status).await;
    assert!(msg.contains(says), "{msg}");
}

#[tokio::test]
async fn bad_trees_are_refused_with_the_reason_and_nothing_is_half_applied() {
    let app = tree().await;
    let c = &app.client;
    let post = |spec: Value| c.post(app.url("/api/budgets")).json(&spec).send();
    let patch = |name: &str, spec: Value| {
        c.patch(app.url(&format!("/api/budgets/{name}")))
            .json(&spec)
            .send()
    };
    refused(
        post(json!({"name": "x", "parent": "nope"})).await.unwrap(),
        400,
        "field 'parent' names no budget",
    )
    .await;
    refused(
        post(json!({"name": "x", "parent": "default", "max_dollars": 1}))
            .await
            .unwrap(),
        400,
        "cannot be 'default'",
    )
    .await;
    refused(
        post(json!({"name": "x"})).await.unwrap(),
        400,
        "field 'max_dollars'",
    )
    .await;
    refused(
        patch("total", json!({"parent": "a"})).await.unwrap(),
        400,
        "would make a cycle",
    )
    .await;
    refused(
        patch("total", json!({"parent": "total"})).await.unwrap(),
        400,
        "would make a cycle",
    )
    .await;
    refused(
        patch("default", json!({"parent": "total"})).await.unwrap(),
        400,
        "cannot be set on 'default'",
    )
    .await;
    refused(
        patch("b", json!({"parent": null})).await.unwrap(),
        400,
        "field 'max_dollars'",
    )
    .await;
    refused(
        c.delete(app.url("/api/budgets/total"))
            .send()
            .await
            .unwrap(),
        409,
        "('a', 'b')",
    )
    .await;
    assert_eq!(app.budget("total").await["parent"], Value::Null);
    assert_eq!(app.budget("b").await["parent"], "total");
    assert!(
        app.get("/api/budgets").await["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["name"] != "x")
    );
    // Moved away first, the parent can go.
    for child in ["a", "b"] {
        let r = patch(child, json!({"parent": null, "max_dollars": "1"}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        c.delete(app.url("/api/budgets/total"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
}

#[tokio::test]
async fn concurrent_requests_over_siblings_and_keys_never_push_any_scope_over_its_cap() {
    let app =
        spawn_with(|s| s.upstream_key = Some(Secret::new("sk-ant-real-key-0123".into()))).await;
    app.create_budget(json!({"name": "total", "max_dollars": "1", "period": "daily"}))
        .await;
    for name in ["s1", "s2", "s3"] {
        app.create_budget(
            json!({"name": name, "max_dollars": "0.5", "period": "daily", "parent": "total"}),
        )
        .await;
    }
    let mut keys = Vec::new();
    for name in ["k1", "k2"] {
        let r = app
            .client
            .post(app.url("/api/budgets/s1/keys"))
            .json(&json!({"name": name, "max_dollars": "0.2"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        keys.push(
            r.json::<Value>().await.unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Each request reports all of its `max_tokens` as output: it costs its worst case or less.
    let script = json!({"usage": {"input_tokens": 1, "output_tokens": 1_000_000}, "stop_at_max_tokens": true});
    let tasks: Vec<_> = (0..320)
        .map(|i| {
            let (client, url, script) = (
                app.client.clone(),
                app.url("/v1/messages"),
                script.to_string(),
            );
            // Through a key of s1 (its budget is the key's), or to s2 and s3 by name.
            let (key, budget) = match i % 4 {
                0 | 1 => (keys[i % 2].clone(), None),
                n => ("sk-test".to_string(), Some(["s2", "s3"][n - 2])),
            };
            tokio::spawn(async move {
                let mut req = client
                    .post(url)
                    .header("x-api-key", key)
                    .header("x-mock", script);
                if let Some(b) = budget {
                    req = req.header("x-budget-id", b);
                }
                req.json(&body("claude-haiku-4-5", 2_000))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!(admitted > 50 && admitted < 320, "{admitted} admitted");
    let total = dollars(&app.budget("total").await["spent_dollars"]);
    assert!(
        total <= Money::parse("1").unwrap(),
        "the parent spent {total}"
    );
    let mut children = Money::ZERO;
    for name in ["s1", "s2", "s3"] {
        let spent = dollars(&app.budget(name).await["spent_dollars"]);
        assert!(
            spent <= Money::parse("0.5").unwrap(),
            "{name} spent {spent}"
        );
        children += spent;
    }
    assert_eq!(children, total, "the records add up at every level");
    let listed = app.get("/api/budgets/s1/keys").await["items"].clone();
    let mut by_keys = Money::ZERO;
    for k in listed.as_array().unwrap() {
        let spent = dollars(&k["spent_dollars"]);
        assert!(
            spent <= Money::parse("0.2").unwrap(),
            "{} spent {spent}",
            k["name"]
        );
        by_keys += spent;
    }
    assert_eq!(
        by_keys,
        dollars(&app.budget("s1").await["spent_dollars"]),
        "s1's spend is its keys'"
    );
}

#[tokio::test]
async fn each_scope_alerts_once_per_threshold() {
    let app = spawn_app().await;
    app.create_budget(
        json!({"name": "total", "max_dollars": "1", "period": "daily", "thresholds": [50]}),
    )
    .await;
    app.create_budget(json!({"name": "a", "max_dollars": "10", "period": "daily", "parent": "total", "thresholds": [50]}))
        .await;
    for _ in 0..4 {
        assert_eq!(send_to(&app, "a", 10, 40_000).await.status(), 200); // $0.20 each
    }
    let alerts = app.get("/api/alerts?budget=total").await["items"].clone();
    let fifty: Vec<&Value> = alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["threshold"] == 50)
        .collect();
    assert_eq!(fifty.len(), 1, "{alerts}");
    let own = app.get("/api/alerts?budget=a").await["items"].clone();
    assert!(
        own.as_array().unwrap().iter().all(|a| a["threshold"] != 50),
        "a spent 8 % of its own cap: {own}"
    );
}

#[tokio::test]
async fn a_key_of_a_child_sees_the_fullest_scope_above_it() {
    let app = tree().await;
    let key = app.create_key("b", "claude").await["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(send_to(&app, "a", 10, 160_000).await.status(), 200); // total: $0.80
    let r = reqwest::Client::new()
        .post(app.url("/v1/messages"))
        .bearer_auth(&key)
        .header("x-mock", output_of(10).to_string())
        .json(&body("claude-haiku-4-5", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["anthropic-ratelimit-unified-overage-utilization"],
        "0.8"
    );
    assert_eq!(
        r.headers()["anthropic-ratelimit-unified-status"],
        "allowed_warning"
    );
}

#[tokio::test]
async fn a_projects_request_is_charged_to_the_child_budget_of_its_name() {
    let app = tree().await;
    let token = crate::sign_in::signed_in(&app, "total").await;
    let access = token["access_token"].as_str().unwrap();
    for project in ["a", "elsewhere"] {
        let mut b = body("claude-haiku-4-5", 10);
        b["tags"] = json!({"project": project});
        let r = reqwest::Client::new()
            .post(app.url("/v1/messages"))
            .bearer_auth(access)
            .header("x-mock", output_of(20_000).to_string()) // $0.10
            .json(&b)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let spent = |v: Value| dollars(&v["spent_dollars"]).to_string();
    assert_eq!(
        spent(app.budget("a").await),
        "0.1",
        "project 'a' is budget 'a' below 'total'"
    );
    assert_eq!(
        spent(app.budget("total").await),
        "0.2",
        "both count in total"
    );
    let records = app.usage("a").await;
    assert_eq!((records.len(), &records[0]["project"]), (1, &json!("a")));
    assert_eq!(
        app.usage("total").await[0]["project"],
        "elsewhere",
        "no such child: its own budget"
    );
}

#[tokio::test]
async fn a_parent_of_the_wrong_shape_or_too_deep_a_tree_is_refused() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "l0", "max_dollars": "1"}))
        .await;
    for i in 1..32 {
        app.create_budget(json!({"name": format!("l{i}"), "parent": format!("l{}", i - 1)}))
            .await;
    }
    let c = &app.client;
    let post = |spec: Value| c.post(app.url("/api/budgets")).json(&spec).send();
    refused(
        post(json!({"name": "deep", "parent": "l31"}))
            .await
            .unwrap(),
        400,
        "deeper than 32 levels",
    )
    .await;
    // Moving a budget with a child under l30 would make 33 levels too.
    app.create_budget(json!({"name": "solo", "max_dollars": "1"}))
        .await;
    app.create_budget(json!({"name": "solo-child", "parent": "solo"}))
        .await;
    let moved = c
        .patch(app.url("/api/budgets/solo"))
        .json(&json!({"parent": "l30"}))
        .send();
    refused(moved.await.unwrap(), 400, "deeper than 32 levels").await;
    let fits = c
        .patch(app.url("/api/budgets/solo"))
        .json(&json!({"parent": "l29"}))
        .send();
    assert_eq!(fits.await.unwrap().status(), 200, "32 levels exactly");
    for bad in [json!({"name": "l0"}), json!(1.5), json!(-3), json!(["l0"])] {
        let r = post(json!({"name": "x", "max_dollars": 1, "parent": bad}))
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let long = "a".repeat(10_000);
    let r = post(json!({"name": "x", "max_dollars": 1, "parent": long}))
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(
        text.len() < 400,
        "the unknown name is not echoed whole: {} bytes",
        text.len()
    );
    // A request to the deepest budget is reserved on all 32 scopes.
    let r = app
        .send(
            Some("l31"),
            &body("claude-haiku-4-5", 10),
            Some(output_of(20_000)),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        dollars(&app.budget("l0").await["spent_dollars"]).to_string(),
        "0.1"
    );
}
