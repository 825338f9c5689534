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

/// Waits until `b` has the team's budget `team`.
async fn follows_budget(b: &TestApp) {
    b.eventually("the other proxy to follow the budget", || async {
        b.client
            .get(b.url("/api/budgets/team"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
}

#[tokio::test]
async fn a_sign_in_made_on_one_proxy_works_on_the_others_until_revoked_on_any() {
    let pg = Postgres::start();
    let (a, b) = (member(&pg).await, member(&pg).await);
    a.create_budget(json!({"name": "team", "max_dollars": "5"}))
        .await;
    follows_budget(&b).await;
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
    follows_budget(&b).await;
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
