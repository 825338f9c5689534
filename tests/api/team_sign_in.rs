//! Claude Code's sign-ins on a team: made on one proxy, taken by every one; revoked on one,
//! refused by all.

use crate::helpers::*;
use crate::sign_in::{form, signed_in};
use agent_budget::config::Secret;
use mock_upstream::postgres::Postgres;
use serde_json::json;

async fn member(pg: &Postgres) -> TestApp {
    let url = pg.url("postgres");
    spawn_with(|s| {
        s.database = Some(url);
        s.upstream_key = Some(Secret::new("sk-ant-team-real-key".into()));
    })
    .await
}

async fn call(app: &TestApp, token: &str) -> u16 {
    reqwest::Client::new()
        .post(app.url("/v1/messages"))
        .bearer_auth(token)
        .json(&body("claude-haiku-4-5", 10))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_sign_in_made_on_one_proxy_works_on_the_others_until_revoked_on_any() {
    let pg = Postgres::start();
    let (a, b) = (member(&pg).await, member(&pg).await);
    a.create_budget(json!({"name": "team", "max_dollars": "5"}))
        .await;
    b.follows_budget("team").await;
    let token = signed_in(&a, "team").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(call(&a, &token).await, 200);
    b.eventually("the other proxy to take the sign-in", || async {
        call(&b, &token).await == 200
    })
    .await;
    // Signed out through the other proxy: refused by both.
    assert_eq!(
        form(&b, "/oauth/revoke", &[("token", &token)])
            .await
            .status(),
        200
    );
    assert_eq!(call(&b, &token).await, 401);
    a.eventually("the first proxy to refuse it too", || async {
        call(&a, &token).await == 401
    })
    .await;
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    form(
        app,
        "/oauth/token",
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

#[tokio::test]
async fn a_sign_in_is_listed_as_one_everywhere_and_its_refresh_token_is_spent_once_team_wide() {
    let pg = Postgres::start();
    let (a, b) = (member(&pg).await, member(&pg).await);
    a.create_budget(json!({"name": "team", "max_dollars": "5"}))
        .await;
    b.follows_budget("team").await;
    let first = signed_in(&a, "team").await;
    let access = first["access_token"].as_str().unwrap().to_string();
    b.eventually("the other proxy to take the sign-in", || async {
        call(&b, &access).await == 200
    })
    .await;
    let kinds = b.get("/api/budgets/team/keys").await["items"].clone();
    assert_eq!(
        kinds[0]["kind"], "sign_in",
        "listed as a sign-in there too: {kinds}"
    );
    // Traded on the proxy that did not issue it.
    let r = refresh(&b, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200);
    let second: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        call(&b, second["access_token"].as_str().unwrap()).await,
        200
    );
    a.eventually("the first proxy to refuse the traded token", || async {
        call(&a, &access).await == 401
    })
    .await;
    // The new refresh token, sent to both proxies at once: exactly one trade.
    let next = second["refresh_token"].as_str().unwrap().to_string();
    a.eventually("the first proxy to know the new refresh token", || async {
        a.get("/api/budgets/team/keys").await["items"]
            .as_array()
            .unwrap()
            .len()
            == 2
    })
    .await;
    let (ra, rb) = tokio::join!(refresh(&a, &next), refresh(&b, &next));
    let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 401], "one token for one refresh token");
}

/// A field of the live sign-in key as a proxy lists it.
async fn live(app: &TestApp, field: &str) -> serde_json::Value {
    let keys = app.get("/api/budgets/team/keys").await["items"].clone();
    keys.as_array()
        .unwrap()
        .iter()
        .find(|k| k["revoked_at"].is_null())
        .map(|k| k[field].clone())
        .unwrap_or_default()
}

/// Two proxies of one team and a sign-in of its $5 budget 'team' with `max_dollars` a day of
/// its own, approved on the first and taken by both: its first token answer.
async fn capped_sign_in(pg: &Postgres, max_dollars: &str) -> (TestApp, TestApp, serde_json::Value) {
    let (a, b) = (member(pg).await, member(pg).await);
    a.create_budget(json!({"name": "team", "max_dollars": "5"}))
        .await;
    b.follows_budget("team").await;
    let code = crate::sign_in::start(&a).await;
    let path = format!(
        "/api/sign-ins/{}/approve",
        code["user_code"].as_str().unwrap()
    );
    let approval = json!({"budget": "team", "max_dollars": max_dollars, "period": "daily"});
    assert_eq!(
        crate::sign_in::admin_post(&a, &path, approval)
            .await
            .status(),
        200
    );
    let (_, first) = crate::sign_in::poll(&a, code["device_code"].as_str().unwrap()).await;
    let token = first["access_token"].as_str().unwrap().to_string();
    b.eventually("the other proxy to take the sign-in", || async {
        call(&b, &token).await == 200
    })
    .await;
    (a, b, first)
}

#[tokio::test]
async fn a_sign_ins_cap_holds_team_wide_across_a_refresh_on_another_proxy() {
    let pg = Postgres::start();
    let (a, b, first) = capped_sign_in(&pg, "0.5").await;
    let token = first["access_token"].as_str().unwrap().to_string();
    assert_eq!(send_keyed(&a, &token, 10, 80_000).await.status(), 200); // $0.40
    // Traded on B: the new token is refused there what the first spent on A leaves no room for.
    let r = refresh(&b, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200);
    let second: serde_json::Value = r.json().await.unwrap();
    let renewed = second["access_token"].as_str().unwrap().to_string();
    let msg = refusal(send_keyed(&b, &renewed, 30_000, 10).await, 429).await;
    assert!(
        msg.starts_with(
            "agent-budget: key 'claude_code sign-in' would exceed its daily cap: spent $0.4"
        ),
        "{msg}"
    );
    // … and on A, once it knows the new token; both list the lineage's one spend.
    a.eventually("the first proxy to take the new token", || async {
        call(&a, &renewed).await == 200
    })
    .await;
    assert_eq!(send_keyed(&a, &renewed, 30_000, 10).await.status(), 429);
    let least = agent_budget::money::Money::parse("0.4").unwrap();
    a.eventually("both proxies to show the team's one figure", || async {
        let (on_a, on_b) = (
            live(&a, "spent_dollars").await,
            live(&b, "spent_dollars").await,
        );
        on_a == on_b && on_a.is_string() && dollars(&on_a) >= least
    })
    .await;
}

#[tokio::test]
async fn a_cap_changed_on_one_proxy_holds_for_a_token_refreshed_on_another_before_it_followed() {
    let pg = Postgres::start();
    let (a, b, first) = capped_sign_in(&pg, "2").await;
    // Lowered on A, and at once (before B follows the change) refreshed on B: the new token
    // carries the lowered cap, not the one B still had.
    let keys = a.get("/api/budgets/team/keys").await["items"].clone();
    let id = keys[0]["id"].as_i64().unwrap();
    let r = a
        .patch(
            &format!("/api/budgets/team/keys/{id}"),
            json!({"max_dollars": "0.1"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = refresh(&b, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200);
    let second: serde_json::Value = r.json().await.unwrap();
    let renewed = second["access_token"].as_str().unwrap().to_string();
    assert_eq!(live(&b, "max_dollars").await, "0.1");
    let msg = refusal(send_keyed(&b, &renewed, 30_000, 10).await, 429).await;
    assert!(
        msg.starts_with("agent-budget: key 'claude_code sign-in' would exceed its daily cap"),
        "{msg}"
    );
    a.eventually(
        "the first proxy to list the new token with the lowered cap",
        || async { live(&a, "max_dollars").await == "0.1" },
    )
    .await;
}
