//! Virtual keys on a team: made or revoked on any proxy, taken or refused by every one.

use crate::helpers::*;
use agent_budget::config::Secret;
use agent_budget::team::Team;
use mock_upstream::postgres::Postgres;
use serde_json::{Value, json};
use std::time::Duration;

const REAL: &str = "sk-ant-team-real-key";

/// A proxy on the team database, with the real key virtual keys are forwarded with.
async fn member(pg: &Postgres, from: Option<(mock_upstream::Mock, tempfile::TempDir)>) -> TestApp {
    let url = pg.url("postgres");
    let adjust = |s: &mut agent_budget::config::Settings| {
        s.database = Some(url);
        s.upstream_key = Some(Secret::new(REAL.into()));
    };
    match from {
        Some((mock, dir)) => start_on(mock, dir, adjust).await,
        None => spawn_with(adjust).await,
    }
}

async fn call(app: &TestApp, key: &str) -> u16 {
    let r = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", key)
        .json(&body("claude-haiku-4-5", 10))
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

async fn make_key(app: &TestApp, budget: &str, name: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/api/budgets/{budget}/keys")))
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap()
}

async fn new_key(app: &TestApp, budget: &str, name: &str) -> String {
    let r = make_key(app, budget, name).await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// This proxy's id for its key named `name` in `budget`.
async fn key_id(app: &TestApp, budget: &str, name: &str) -> i64 {
    let listed = app.get(&format!("/api/budgets/{budget}/keys")).await;
    listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no key {name} in {listed}"))["id"]
        .as_i64()
        .unwrap()
}

async fn revoke(app: &TestApp, budget: &str, id: i64) -> reqwest::Response {
    app.client
        .delete(app.url(&format!("/api/budgets/{budget}/keys/{id}")))
        .send()
        .await
        .unwrap()
}

async fn eventually_status(app: &TestApp, key: &str, want: u16, what: &str) {
    app.eventually(what, || async { call(app, key).await == want })
        .await;
}

#[tokio::test]
async fn a_key_made_or_revoked_on_one_proxy_is_taken_or_refused_by_every_one() {
    let pg = Postgres::start();
    let a = member(&pg, None).await;
    let b = member(&pg, None).await;
    let c = member(&pg, None).await;
    a.create_budget(json!({"name": "team", "max_dollars": "10"}))
        .await;
    let key = new_key(&a, "team", "ci").await;
    for app in [&b, &c] {
        eventually_status(app, &key, 200, "the others to take a key made on A").await;
    }
    // Forwarded with the real key, charged to the key's budget on the proxy that took it.
    let seen = b.mock.state.seen();
    assert_eq!(seen.last().unwrap().headers["x-api-key"], REAL);
    assert_eq!(b.usage("team").await.len(), 1);
    assert_eq!(
        b.get("/api/budgets/team/keys").await["items"][0]["name"],
        "ci"
    );

    // C is away while B revokes the key: B refuses it at once, A within a second.
    let (c_mock, c_dir) = c.stop().await;
    let r = revoke(&b, "team", key_id(&b, "team", "ci").await).await;
    assert_eq!(r.status(), 204);
    assert_eq!(call(&b, &key).await, 401);
    eventually_status(&a, &key, 401, "A to refuse a key revoked on B").await;
    // Back, C follows the revocation and cannot bring the key back.
    let c = member(&pg, Some((c_mock, c_dir))).await;
    eventually_status(
        &c,
        &key,
        401,
        "C to refuse the key revoked while it was away",
    )
    .await;
    let listed = c.get("/api/budgets/team/keys").await;
    assert!(listed["items"][0]["revoked_at"].is_string(), "{listed}");
    assert_eq!(call(&a, &key).await, 401);

    // A proxy that joins brings its keys.
    let solo = spawn_with(|s| s.upstream_key = Some(Secret::new(REAL.into()))).await;
    solo.create_budget(json!({"name": "solo", "max_dollars": "3"}))
        .await;
    let own = new_key(&solo, "solo", "own").await;
    let joined = member(&pg, Some(solo.stop().await)).await;
    assert_eq!(call(&joined, &own).await, 200);
    eventually_status(&a, &own, 200, "A to take the joining proxy's key").await;
    assert_eq!(a.usage("solo").await.len(), 1);

    // Deleting a budget revokes its keys everywhere; a budget made again under its name has
    // none of them.
    let late = new_key(&a, "team", "late").await;
    eventually_status(&c, &late, 200, "C to take the second key").await;
    let r = a
        .client
        .delete(a.url("/api/budgets/team"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let team = Team::connect(&pg.url("postgres"), Duration::from_secs(30))
        .await
        .unwrap();
    let keys = team.keys().await.unwrap();
    assert!(
        keys.iter()
            .filter(|k| k.budget == "team")
            .all(|k| k.revoked),
        "{keys:?}"
    );
    for app in [&b, &c, &joined] {
        app.eventually("every proxy to follow the deletion", || async {
            app.client
                .get(app.url("/api/budgets/team"))
                .send()
                .await
                .unwrap()
                .status()
                == 404
        })
        .await;
    }
    a.create_budget(json!({"name": "team", "max_dollars": "10"}))
        .await;
    c.eventually("C to follow the new budget", || async {
        let r = c
            .client
            .get(c.url("/api/budgets/team"))
            .send()
            .await
            .unwrap();
        r.status() == 200
    })
    .await;
    assert_eq!(c.get("/api/budgets/team/keys").await["items"], json!([]));
    for app in [&a, &b, &c, &joined] {
        assert_eq!(call(app, &late).await, 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_change_the_team_database_cannot_take_changes_nothing() {
    let pg = Postgres::start();
    let a = member(&pg, None).await;
    a.create_budget(json!({"name": "team", "max_dollars": "10"}))
        .await;
    new_key(&a, "team", "ci").await;
    pg.stop_server();
    let made = make_key(&a, "team", "late").await;
    assert_eq!(made.status(), 503);
    let text = made.text().await.unwrap();
    assert!(
        text.contains("key 'late' of budget 'team' was not created"),
        "{text}"
    );
    let r = revoke(&a, "team", key_id(&a, "team", "ci").await).await;
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("was not revoked"));
    let listed = a.get("/api/budgets/team/keys").await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert!(items[0]["revoked_at"].is_null());
    // The default budget's keys are this proxy's own: made without the team database.
    let own = make_key(&a, "default", "local").await;
    assert_eq!(own.status(), 201);
    pg.start_server();
    a.eventually("changes to work again", || async {
        make_key(&a, "team", "late").await.status() == 201
    })
    .await;
}

async fn set_cap(app: &TestApp, id: i64, cap: Value) -> Value {
    let r = app
        .patch(&format!("/api/budgets/team/keys/{id}"), cap)
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_cap_given_to_a_key_on_one_proxy_counts_its_spend_on_every_one() {
    let pg = Postgres::start();
    let a = member(&pg, None).await;
    let b = member(&pg, None).await;
    a.create_budget(json!({"name": "team", "max_dollars": "10"}))
        .await;
    let key = new_key(&a, "team", "dev").await;
    eventually_status(&b, &key, 200, "B to take the key").await;
    // Spent on B before the key had a cap of its own: $0.40.
    assert_eq!(send_keyed(&b, &key, 10, 80_000).await.status(), 200);
    // Capped on A: A counts what B charged at once, from the team's records.
    let view = set_cap(
        &a,
        key_id(&a, "team", "dev").await,
        json!({"max_dollars": "0.5"}),
    )
    .await;
    assert_eq!(view["max_dollars"], "0.5");
    assert_eq!(send_keyed(&a, &key, 30_000, 10).await.status(), 429);
    b.eventually("B to take the cap", || async {
        send_keyed(&b, &key, 30_000, 10).await.status() == 429
    })
    .await;
    let listed = b.get("/api/budgets/team/keys").await["items"][0].clone();
    assert_eq!(
        (&listed["max_dollars"], &listed["period"]),
        (&json!("0.5"), &json!("total"))
    );
    // Taken away on B: A follows.
    set_cap(
        &b,
        key_id(&b, "team", "dev").await,
        json!({"max_dollars": null}),
    )
    .await;
    assert_eq!(send_keyed(&b, &key, 30_000, 10).await.status(), 200);
    a.eventually("A to drop the cap", || async {
        send_keyed(&a, &key, 30_000, 10).await.status() == 200
    })
    .await;
}
