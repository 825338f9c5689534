//! Budgets that nest on a team (docs/team.md): three proxies on one PostgreSQL reserve a
//! request's whole chain — its key's cap, its budget, the budget's ancestors — in one
//! transaction, so that no scope goes over its cap across them.

use crate::helpers::*;
use agent_budget::config::Secret;
use agent_budget::money::Money;
use mock_upstream::postgres::Postgres;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

async fn proxies(pg: &Postgres, n: usize) -> Vec<TestApp> {
    let mut apps = Vec::new();
    for _ in 0..n {
        let url = pg.url("postgres");
        apps.push(
            spawn_with(|s| {
                s.database = Some(url);
                s.upstream_key = Some(Secret::new("sk-ant-real-key-0123".into()));
            })
            .await,
        );
    }
    apps
}

/// A resource that may not be there yet (another proxy has not followed).
async fn found(app: &TestApp, path: &str) -> Value {
    let r = app.client.get(app.url(path)).send().await.unwrap();
    match r.status().is_success() {
        true => r.json().await.unwrap(),
        false => Value::Null,
    }
}

/// Every row of the team's spend: (scope, spent + reserved, spent).
async fn rows(db: &tokio_postgres::Client) -> Vec<(String, i64, i64)> {
    db.query(
        "SELECT budget, spent + reserved, spent FROM team_spend",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

async fn database(pg: &Postgres) -> tokio_postgres::Client {
    let (db, conn) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    db
}

fn picos(s: &str) -> i64 {
    Money::parse(s).unwrap().picos()
}

#[tokio::test]
async fn three_proxies_never_push_any_scope_of_a_tree_over_its_cap() {
    let pg = Postgres::start();
    let apps = proxies(&pg, 3).await;
    apps[0]
        .create_budget(json!({"name": "total", "max_dollars": "1", "period": "daily"}))
        .await;
    for name in ["s1", "s2", "s3"] {
        apps[0]
            .create_budget(
                json!({"name": name, "max_dollars": "0.5", "period": "daily", "parent": "total"}),
            )
            .await;
    }
    let mut keys = Vec::new();
    for name in ["k1", "k2"] {
        let r = apps[0]
            .client
            .post(apps[0].url("/api/budgets/s1/keys"))
            .json(&json!({"name": name, "max_dollars": "0.2"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        keys.push(
            r.json::<Value>().await.unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for app in &apps[1..] {
        app.eventually("the tree and the keys' caps on every proxy", || async {
            let keys = found(app, "/api/budgets/s1/keys").await["items"].clone();
            found(app, "/api/budgets/s3").await["ancestors"] == json!(["total"])
                && keys
                    .as_array()
                    .is_some_and(|k| k.len() == 2 && k.iter().all(|k| k["max_dollars"] == "0.2"))
        })
        .await;
    }
    let mut caps: HashMap<String, i64> = ["s1", "s2", "s3"]
        .map(|n| (n.to_string(), picos("0.5")))
        .into();
    caps.insert("total".into(), picos("1"));
    for k in &keys {
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(k.as_bytes()));
        caps.insert(format!("key:{hash}"), picos("0.2"));
    }
    // Sampled while the requests run: no scope's spend and holds ever above its cap.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (db, done, caps) = (database(&pg).await, done.clone(), caps.clone());
        tokio::spawn(async move {
            let mut samples = 0;
            while !done.load(Ordering::Relaxed) {
                for (scope, held, _) in rows(&db).await {
                    let cap = caps[&scope];
                    assert!(held <= cap, "{scope} holds {held} of {cap} picodollars");
                }
                samples += 1;
            }
            samples
        })
    };
    let script = json!({"usage": {"input_tokens": 1, "output_tokens": 1_000_000}, "stop_at_max_tokens": true});
    let sends = (0..330).map(|i| {
        let app = &apps[i % 3];
        // Through a key of s1 (the key's budget), or to s2 and s3 by name.
        let (key, budget) = match i % 5 {
            0 | 1 => (keys[i % 2].clone(), None),
            n => ("sk-test".to_string(), Some(["s2", "s3", "s1"][n - 2])),
        };
        let script = script.to_string();
        async move {
            let mut req = app
                .client
                .post(app.url("/v1/messages"))
                .header("x-api-key", key)
                .header("x-mock", script);
            if let Some(b) = budget {
                req = req.header("x-budget-id", b);
            }
            let r = req
                .json(&body("claude-haiku-4-5", 2_000))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    });
    let statuses = futures_util::future::join_all(sends).await;
    done.store(true, Ordering::Relaxed);
    assert!(sampler.await.unwrap() > 0, "sampled while running");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!(admitted > 50 && admitted < 330, "{admitted} admitted");
    // Exact at the end: nothing held, each scope under its cap, and each scope's spend is
    // the sum of the records it counts.
    let db = database(&pg).await;
    let usage: Vec<(String, Option<String>, i64)> = db
        .query("SELECT budget, key_hash, cost FROM team_usage", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(usage.len(), admitted, "one record per forwarded request");
    let spend = rows(&db).await;
    assert_eq!(spend.len(), 6, "total, s1-s3 and the two keys: {spend:?}");
    for (scope, held, spent) in &spend {
        assert_eq!(held, spent, "{scope} holds nothing once all settled");
        assert!(spent <= &caps[scope], "{scope} spent {spent}");
        let counted: i64 = usage
            .iter()
            .filter(|(budget, key, _)| match scope.strip_prefix("key:") {
                Some(hash) => key.as_deref() == Some(hash),
                None => scope == "total" || scope == budget,
            })
            .map(|(_, _, cost)| cost)
            .sum();
        assert_eq!(*spent, counted, "{scope}'s spend is its records'");
    }
    // Every proxy's dashboard shows the team's figures for the tree and the keys.
    let total = spend.iter().find(|r| r.0 == "total").unwrap().2;
    let by_keys: i64 = spend
        .iter()
        .filter(|r| r.0.starts_with("key:"))
        .map(|r| r.2)
        .sum();
    for app in &apps {
        app.eventually("the team's totals on every dashboard", || async {
            let keys = app.get("/api/budgets/s1/keys").await["items"].clone();
            let shown: i64 = (keys.as_array().unwrap().iter())
                .map(|k| dollars(&k["spent_dollars"]).picos())
                .sum();
            dollars(&app.budget("total").await["spent_dollars"]).picos() == total
                && shown == by_keys
        })
        .await;
    }
    // Each scope's thresholds are raised once across the proxies, by the one that crossed it.
    for name in ["total", "s1", "s2", "s3"] {
        let mut raised = Vec::new();
        for app in &apps {
            let alerts = app.get(&format!("/api/alerts?budget={name}")).await["items"].clone();
            raised.extend(
                (alerts.as_array().unwrap().iter())
                    .filter(|a| a["kind"] == "threshold")
                    .map(|a| a["threshold"].as_u64().unwrap()),
            );
        }
        raised.sort();
        let spent = spend.iter().find(|r| r.0 == name).unwrap().2;
        let expected: Vec<u64> = [50, 80, 100]
            .into_iter()
            .filter(|t| spent * 100 >= caps[name] * *t as i64)
            .collect();
        assert_eq!(raised, expected, "{name} spent {spent}");
    }
}

async fn send(app: &TestApp, max_tokens: u64, output: u64) -> reqwest::Response {
    let b = body("claude-haiku-4-5", max_tokens);
    app.send(Some("a"), &b, Some(output_of(output))).await
}

#[tokio::test]
async fn a_move_on_one_proxy_is_followed_and_the_team_counts_both_parents_again() {
    let pg = Postgres::start();
    let apps = proxies(&pg, 3).await;
    for (name, cap, parent) in [
        ("total", "1", None),
        ("other", "1", None),
        ("a", "5", Some("total")),
    ] {
        apps[0]
            .create_budget(json!({"name": name, "max_dollars": cap, "parent": parent}))
            .await;
    }
    for app in &apps[1..] {
        app.eventually("the child on the other proxies", || async {
            found(app, "/api/budgets/a").await["ancestors"] == json!(["total"])
        })
        .await;
    }
    // Haiku 4.5's output is $5 per MTok: the worst case is `max_tokens`, the charge `output`.
    assert_eq!(send(&apps[1], 10, 100_000).await.status(), 200); // $0.50
    let db = database(&pg).await;
    let spent = |name: &'static str| {
        let db = &db;
        async move {
            rows(db)
                .await
                .into_iter()
                .find(|r| r.0 == name)
                .map(|r| r.2)
        }
    };
    assert_eq!(spent("total").await, Some(picos("0.5")));
    let r = apps[2]
        .patch("/api/budgets/a", json!({"parent": "other"}))
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    followed_move(&apps, 2).await;
    // The next request through the first proxy reserves on `other`, which starts from the
    // team's records of its new subtree; `total` no longer counts them.
    let msg = refusal(send(&apps[0], 110_000, 10).await, 429).await; // $0.55 at worst
    assert!(
        msg.contains("budget 'other' (above 'a') would exceed its total cap: spent $0.50"),
        "{msg}"
    );
    assert_eq!(send(&apps[0], 10, 80_000).await.status(), 200); // $0.40
    assert_eq!(spent("other").await, Some(picos("0.9")));
    let total_now = spent("total").await;
    assert!(total_now.is_none_or(|s| s == 0), "{total_now:?}");
    // The team database's health and call times are in every proxy's metrics.
    let text = apps[0].metrics().await;
    assert!(text.contains("agent_budget_team_database_up 1"), "{text}");
    let calls = (text.lines())
        .find_map(|l| l.strip_prefix("agent_budget_team_database_seconds_count "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(calls.is_some_and(|n| n > 0), "{text}");
}

/// What the team's records charged each budget.
async fn recorded(db: &tokio_postgres::Client) -> HashMap<String, i64> {
    db.query(
        "SELECT budget, SUM(cost)::BIGINT FROM team_usage GROUP BY budget",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Two proxies with `a` and `d` below `total`, and `other` beside it ($5 each), made on the
/// first and followed by the second.
async fn two_parents(pg: &Postgres) -> Vec<TestApp> {
    let apps = proxies(pg, 2).await;
    for (name, parent) in [
        ("total", None),
        ("other", None),
        ("a", Some("total")),
        ("d", Some("total")),
    ] {
        apps[0]
            .create_budget(json!({"name": name, "max_dollars": "5", "parent": parent}))
            .await;
    }
    let there = &apps[1];
    there
        .eventually("the children on the other proxy", || async {
            found(there, "/api/budgets/d").await["ancestors"] == json!(["total"])
                && found(there, "/api/budgets/a").await["ancestors"] == json!(["total"])
        })
        .await;
    apps
}

#[tokio::test]
async fn a_request_in_flight_when_its_budget_moves_is_charged_under_its_new_parent_team_wide() {
    let pg = Postgres::start();
    let apps = two_parents(&pg).await;
    let (here, there) = (&apps[0], &apps[1]);
    // Two streams held open on the second proxy: one through `a`, which moves, one through
    // `d`, which stays.
    let mut stream = body("claude-haiku-4-5", 16_000);
    stream["stream"] = json!(true);
    let script = json!({"hang_after": 3, "late_usage": true});
    let held_a = there.send(Some("a"), &stream, Some(script.clone())).await;
    let held_d = there.send(Some("d"), &stream, Some(script)).await;
    assert_eq!(
        (held_a.status().as_u16(), held_d.status().as_u16()),
        (200, 200)
    );
    let r = here
        .patch("/api/budgets/a", json!({"parent": "other"}))
        .await;
    assert_eq!(r.status(), 200);
    followed_move(&apps, 0).await;
    // `total`'s row, dropped by the move, opens again from the records and keeps the holds
    // still on it.
    assert_eq!(send_via(there, "d", 10, 10).await.status(), 200);
    let db = database(&pg).await;
    let held_on_total = rows(&db)
        .await
        .into_iter()
        .find(|r| r.0 == "total")
        .map(|r| r.1 - r.2);
    assert!(
        held_on_total.is_some_and(|h| h >= 2 * picos("0.08")),
        "{held_on_total:?}"
    );
    drop((held_a, held_d));
    for budget in ["a", "d"] {
        there
            .eventually("the held streams settle", || async {
                dollars(&there.budget(budget).await["reserved_dollars"]) == Money::ZERO
            })
            .await;
    }
    // `other` opens from the records of its subtree now.
    assert_eq!(send_via(there, "a", 10, 10).await.status(), 200);
    let (spend, records) = (rows(&db).await, recorded(&db).await);
    let row = |name: &str| spend.iter().find(|r| r.0 == name).map(|r| (r.1, r.2));
    let of = |name: &str| records.get(name).copied().unwrap_or(0);
    assert_eq!(
        row("total"),
        Some((of("d"), of("d"))),
        "d's charges, nothing held"
    );
    assert_eq!(
        row("other"),
        Some((of("a"), of("a"))),
        "a's charges, its stream's too"
    );
    assert!(of("a") > 0 && of("d") > 0, "{records:?}");
}

/// Waits until every proxy but `mover` has followed `a`'s move to `other`, all of it: a
/// proxy drops the parents' team rows just after it shows the move, so a later change is made
/// on `mover` and awaited everywhere (a proxy follows the team one whole pass after another,
/// each from the budgets as they were when it started).
async fn followed_move(apps: &[TestApp], mover: usize) {
    let others = || apps.iter().enumerate().filter(move |(i, _)| *i != mover);
    for (_, app) in others() {
        app.eventually("the move on the other proxies", || async {
            app.get("/api/budgets/a").await["ancestors"] == json!(["other"])
        })
        .await;
    }
    let r = apps[mover]
        .patch("/api/budgets/other", json!({"thresholds": [50, 90]}))
        .await;
    assert_eq!(r.status(), 200);
    for (_, app) in others() {
        app.eventually("the pass after the move", || async {
            app.get("/api/budgets/other").await["thresholds"] == json!([50, 90])
        })
        .await;
    }
}

async fn send_via(app: &TestApp, budget: &str, max_tokens: u64, output: u64) -> reqwest::Response {
    let b = body("claude-haiku-4-5", max_tokens);
    app.send(Some(budget), &b, Some(output_of(output))).await
}

#[tokio::test]
async fn what_a_proxy_charged_the_old_parent_before_it_followed_a_move_is_counted_again() {
    let pg = Postgres::start();
    let apps = two_parents(&pg).await;
    let (here, there) = (&apps[0], &apps[1]);
    // Moved here, and at once (before the other proxy follows) spent through `a` there: it
    // charges `total`, the parent it knows.
    let r = here
        .patch("/api/budgets/a", json!({"parent": "other"}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(send_via(there, "a", 10, 100_000).await.status(), 200); // $0.50
    let db = database(&pg).await;
    there
        .eventually("the request's record", || async {
            recorded(&db).await.get("a") == Some(&picos("0.5"))
        })
        .await;
    // Once it has followed, `total` counts only its own subtree's records again.
    followed_move(&apps, 0).await;
    assert_eq!(send_via(there, "d", 10, 20_000).await.status(), 200); // $0.10
    assert_eq!(send_via(there, "a", 10, 20_000).await.status(), 200);
    let (spend, records) = (rows(&db).await, recorded(&db).await);
    let row = |name: &str| spend.iter().find(|r| r.0 == name).map(|r| r.2);
    assert_eq!(row("total"), Some(records["d"]));
    assert_eq!(row("other"), Some(records["a"]));
    assert_eq!(records["a"], picos("0.6"));
}
