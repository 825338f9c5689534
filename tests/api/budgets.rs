//! The REST API for budgets, usage, pricing and stats.

use crate::helpers::*;
use serde_json::{Value, json};

#[tokio::test]
async fn budget_lifecycle() {
    let app = spawn_app().await;
    let list = app.get("/api/budgets").await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "only the built-in default budget");
    let d = &items[0];
    assert_eq!(
        (
            d["name"].as_str(),
            d["max_dollars"].clone(),
            d["period"].as_str()
        ),
        (Some("default"), Value::Null, Some("total"))
    );
    assert_eq!(
        (d["percent_used"].as_f64(), d["resets_at"].clone()),
        (Some(0.0), Value::Null)
    );
    assert_eq!(d["period_start"], d["created_at"]);

    let b = app
        .create_budget(json!({"name": "my-agents", "max_dollars": 25.5, "period": "daily", "max_tokens": 1000000,
            "webhook_url": "https://hooks.example.test/x", "thresholds": [90, 50]}))
        .await;
    assert_eq!(b["max_dollars"], "25.5");
    assert_eq!(b["thresholds"], json!([50, 90]));
    assert_eq!(b["remaining_dollars"], "25.5");
    for k in ["spent_dollars", "reserved_dollars"] {
        assert_eq!(b[k], "0", "{k}");
    }
    let resets = b["resets_at"].as_str().unwrap();
    assert!(
        resets.ends_with("T00:00:00.000+01:00") || resets.ends_with("T00:00:00.000+02:00"),
        "Berlin midnight: {resets}"
    );

    let by_name = app.budget("my-agents").await;
    let by_id = app.budget(&b["id"].to_string()).await;
    assert_eq!(by_name, by_id);
    assert_eq!(by_name["breakdown"], json!([]));

    let dup = app
        .client
        .post(app.url("/api/budgets"))
        .json(&json!({"name": "my-agents", "max_dollars": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);
    assert_eq!(
        dup.json::<Value>().await.unwrap()["error"]["type"],
        "conflict_error"
    );

    let patched = app
        .client
        .patch(app.url("/api/budgets/my-agents"))
        .json(&json!({"max_dollars": "30", "period": "monthly", "webhook_url": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let p: Value = patched.json().await.unwrap();
    assert_eq!(
        (
            p["max_dollars"].as_str(),
            p["period"].as_str(),
            p["webhook_url"].clone()
        ),
        (Some("30"), Some("monthly"), Value::Null)
    );
    assert_eq!(p["max_tokens"], 1000000, "absent fields are unchanged");

    let del = app
        .client
        .delete(app.url("/api/budgets/my-agents"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    assert_eq!(
        app.client
            .get(app.url("/api/budgets/my-agents"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let del_default = app
        .client
        .delete(app.url("/api/budgets/default"))
        .send()
        .await
        .unwrap();
    assert_eq!(del_default.status(), 400);
}

#[tokio::test]
async fn invalid_budget_input_names_the_field_and_changes_nothing() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "team", "max_dollars": "5"}))
        .await;
    let cases = [
        (json!({"name": "Team!", "max_dollars": 5}), "name"),
        (json!({"name": "x", "max_dollars": -1}), "max_dollars"),
        (json!({"name": "x", "max_dollars": "abc"}), "max_dollars"),
        (json!({"name": "x"}), "max_dollars"),
        (
            json!({"name": "x", "max_dollars": 5, "period": "hourly"}),
            "period",
        ),
        (
            json!({"name": "x", "max_dollars": 5, "webhook_url": "ftp://a"}),
            "webhook_url",
        ),
        (
            json!({"name": "x", "max_dollars": 5, "thresholds": [0]}),
            "thresholds",
        ),
        (
            json!({"name": "x", "max_dollars": 5, "max_tokens": -3}),
            "max_tokens",
        ),
        (
            json!({"name": "x", "max_dollars": 5, "colour": "red"}),
            "colour",
        ),
    ];
    for (input, field) in cases {
        let r = app
            .client
            .post(app.url("/api/budgets"))
            .json(&input)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{input}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{input} → {e}"
        );
    }
    let bad_patch = app
        .client
        .patch(app.url("/api/budgets/team"))
        .json(&json!({"period": "daily", "thresholds": [500]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_patch.status(), 400);
    let after = app.get("/api/budgets").await;
    let names: Vec<&str> = after["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "team"]);
    assert_eq!(
        app.budget("team").await["period"],
        "total",
        "the invalid patch was not half-applied"
    );
    let not_json = app
        .client
        .post(app.url("/api/budgets"))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
}

/// Every page of `key`'s usage, at every offset, against the records in the database.
async fn assert_pages_match_the_table(app: &TestApp, db: &rusqlite::Connection, key: &str) {
    let budget_id = app.budget(key).await["id"].as_i64().unwrap();
    let ids = |v: &Value| -> Vec<i64> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    let stored: Vec<i64> = db
        .prepare("SELECT id FROM usage WHERE budget_id = ?1 ORDER BY id DESC")
        .unwrap()
        .query_map([budget_id], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for offset in 0..=stored.len() + 1 {
        let page = app
            .get(&format!("/api/budgets/{key}/usage?limit=3&offset={offset}"))
            .await;
        let want: Vec<i64> = stored.iter().skip(offset).take(3).copied().collect();
        assert_eq!(ids(&page), want, "{key} at offset {offset}");
        assert_eq!(page["total"].as_u64(), Some(stored.len() as u64), "{key}");
    }
}

#[tokio::test]
async fn usage_pages_stay_exact_across_budgets_and_retention() {
    // A page is found by each record's number within its budget (one index seek at any
    // offset); interleaved budgets, retention deleting the oldest records, and a budget whose
    // records were all deleted must not throw the numbering off.
    let app = spawn_with(|s| s.retention_days = Some(30)).await;
    app.create_budget(json!({"name": "team", "max_dollars": "100"}))
        .await;
    for i in 0..12 {
        let key = if i % 3 == 0 { Some("team") } else { None };
        assert_eq!(
            app.send(key, &body("claude-haiku-4-5", 10), None)
                .await
                .status(),
            200
        );
    }
    let db = rusqlite::Connection::open(app.dir.path().join("agent-budget.db")).unwrap();
    assert_pages_match_the_table(&app, &db, "default").await;
    assert_pages_match_the_table(&app, &db, "team").await;

    // The oldest five go (two of them the team's), then every team record.
    let age = |sql: &str| {
        db.execute(
            &format!("UPDATE usage SET created_at = created_at - 31 * 86400000 WHERE {sql}"),
            [],
        )
        .unwrap()
    };
    age("id IN (SELECT id FROM usage ORDER BY id LIMIT 5)");
    let service = app.server.as_ref().unwrap().service();
    assert_eq!(service.sweep_retention().await.unwrap(), 5);
    for i in 0..4 {
        let key = if i % 2 == 0 { Some("team") } else { None };
        app.send(key, &body("claude-haiku-4-5", 10), None).await;
    }
    assert_pages_match_the_table(&app, &db, "default").await;
    assert_pages_match_the_table(&app, &db, "team").await;

    let team = app.budget("team").await["id"].as_i64().unwrap();
    age(&format!(
        "id <= (SELECT max(id) FROM usage WHERE budget_id = {team})"
    ));
    assert!(service.sweep_retention().await.unwrap() > 0);
    assert_eq!(app.get("/api/budgets/team/usage").await["total"], 0);
    app.send(Some("team"), &body("claude-haiku-4-5", 10), None)
        .await;
    app.send(None, &body("claude-haiku-4-5", 10), None).await;
    assert_pages_match_the_table(&app, &db, "default").await;
    assert_pages_match_the_table(&app, &db, "team").await;
}

#[tokio::test]
async fn usage_is_paginated_newest_first() {
    let app = spawn_app().await;
    for i in 1..=7u64 {
        let usage = json!({"input_tokens": i, "output_tokens": 0});
        assert_eq!(
            app.send(
                None,
                &body("claude-haiku-4-5", 10),
                Some(json!({"usage": usage}))
            )
            .await
            .status(),
            200
        );
    }
    let page = app.get("/api/budgets/default/usage?limit=3&offset=2").await;
    assert_eq!(
        (
            page["total"].as_u64(),
            page["limit"].as_u64(),
            page["offset"].as_u64()
        ),
        (Some(7), Some(3), Some(2))
    );
    let inputs: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["input_tokens"].as_u64().unwrap())
        .collect();
    assert_eq!(inputs, [5, 4, 3]);
    assert_eq!(
        app.get("/api/budgets/default/usage?limit=100000").await["limit"],
        500,
        "limit is clamped"
    );
    assert_eq!(app.get("/api/budgets/default/usage").await["limit"], 50);
    let bad = app
        .client
        .get(app.url("/api/budgets/default/usage?limit=lots"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // The sum of the records equals the budget's spend, exactly.
    let total: agent_budget::money::Money = app
        .usage("default")
        .await
        .iter()
        .map(|r| dollars(&r["cost_dollars"]))
        .sum();
    assert_eq!(
        total,
        dollars(&app.budget("default").await["spent_dollars"])
    );
}

#[tokio::test]
async fn price_edits_apply_to_later_requests_and_persist() {
    let app = spawn_app().await;
    let table = app.get("/api/pricing").await;
    assert_eq!(table["as_of"], "2026-08-21");
    assert!(table["source"].as_str().unwrap().contains("pricing"));
    let sonnet = table["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "claude-sonnet-4-6")
        .unwrap()
        .clone();
    assert_eq!(
        (
            sonnet["input_per_mtok"].as_str(),
            sonnet["output_per_mtok"].as_str()
        ),
        (Some("3"), Some("15"))
    );

    let usage = json!({"usage": {"input_tokens": 1000000, "output_tokens": 0}});
    app.send(None, &body("claude-sonnet-4-6", 10), Some(usage.clone()))
        .await;
    let mut edited = sonnet.clone();
    edited["input_per_mtok"] = json!("4.5");
    let r = app
        .client
        .put(app.url("/api/pricing"))
        .json(&edited)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["input_per_mtok"], "4.5");
    app.send(None, &body("claude-sonnet-4-6", 10), Some(usage))
        .await;
    let costs: Vec<String> = app
        .usage("default")
        .await
        .iter()
        .map(|r| r["cost_dollars"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        costs,
        ["4.5", "3"],
        "newest first: the edit priced only the later request"
    );

    let bad = app
        .client
        .put(app.url("/api/pricing"))
        .json(&json!({"model": "x", "input_per_mtok": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(
        bad.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("output_per_mtok")
    );

    let (mock, dir) = app.stop().await;
    let again = start_on(mock, dir, |_| {}).await;
    let t = again.get("/api/pricing").await;
    let s = t["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "claude-sonnet-4-6")
        .unwrap()
        .clone();
    assert_eq!(s["input_per_mtok"], "4.5", "edits persist across restarts");
}

#[tokio::test]
async fn stats_add_up_by_model_and_budget() {
    let app = spawn_app().await;
    app.create_budget(json!({"name": "team", "max_dollars": "10"}))
        .await;
    let u = |i: u64, o: u64| Some(json!({"usage": {"input_tokens": i, "output_tokens": o}}));
    app.send(Some("team"), &body("claude-sonnet-4-6", 10), u(1000, 100))
        .await; // 0.003 + 0.0015
    app.send(None, &body("claude-haiku-4-5", 10), u(1000, 100))
        .await; // 0.001 + 0.0005
    app.send(Some("team"), &body("claude-sonnet-4-6", 100_000), None)
        .await; // blocked? no: 1.5 < 10
    let s = app.get("/api/stats").await;
    for span in ["today", "this_month", "all_time"] {
        assert_eq!(s[span]["requests"], 3, "{span}");
    }
    assert_eq!(s["all_time"]["dollars"], "0.0063");
    assert_eq!(s["all_time"]["tokens"], 1100 + 1100 + 40);
    let by_budget: Vec<(String, String)> = s["by_budget"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["budget"].as_str().unwrap().into(),
                b["dollars"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        by_budget,
        [
            ("team".into(), "0.0048".into()),
            ("default".into(), "0.0015".into())
        ]
    );
    let sonnet = s["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "claude-sonnet-4-6")
        .unwrap();
    assert_eq!(
        (sonnet["requests"].as_u64(), sonnet["dollars"].as_str()),
        (Some(2), Some("0.0048"))
    );
}
