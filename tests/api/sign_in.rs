//! Claude Code's sign-in (docs/claude-code.md): discovery, the device flow, approval in the
//! admin API, the token as a key of the chosen budget, revocation, and bad input.

use crate::helpers::*;
use agent_budget::config::Secret;
use serde_json::{Value, json};

const DEVICE: &str = "urn:ietf:params:oauth:grant-type:device_code";

async fn gateway() -> TestApp {
    let app =
        spawn_with(|s| s.upstream_key = Some(Secret::new("sk-ant-real-key-0123".into()))).await;
    app.create_budget(json!({"name": "dev", "max_dollars": "5", "period": "daily"}))
        .await;
    app
}

/// `POST` a form as Claude Code does (no credentials).
pub async fn form(app: &TestApp, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    reqwest::Client::new()
        .post(app.url(path))
        .header("user-agent", "claude-code/2.1.328")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"))
        .send()
        .await
        .unwrap()
}

pub async fn start(app: &TestApp) -> Value {
    let r = form(
        app,
        "/oauth/device_authorization",
        &[("surface", "claude_code"), ("x-future", "1")],
    )
    .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

pub async fn poll(app: &TestApp, device_code: &str) -> (u16, Value) {
    let r = form(
        app,
        "/oauth/token",
        &[("grant_type", DEVICE), ("device_code", device_code)],
    )
    .await;
    (r.status().as_u16(), r.json().await.unwrap())
}

pub async fn admin_post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn messages(app: &TestApp, bearer: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.url("/v1/messages?beta=true"))
        .bearer_auth(bearer)
        .json(&body("claude-haiku-4-5", 10))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn discovery_names_endpoints_on_the_origin_the_client_used() {
    let app = gateway().await;
    let d: Value = reqwest::get(app.url("/.well-known/oauth-authorization-server"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let base = app.url("");
    assert_eq!(d["issuer"], base);
    assert_eq!(
        d["device_authorization_endpoint"],
        format!("{base}/oauth/device_authorization")
    );
    assert_eq!(d["token_endpoint"], format!("{base}/oauth/token"));
    assert_eq!(d["revocation_endpoint"], format!("{base}/oauth/revoke"));
}

#[tokio::test]
async fn an_approved_sign_in_is_a_key_of_its_budget_and_its_token_works_once_delivered() {
    let app = gateway().await;
    let code = start(&app).await;
    let user_code = code["user_code"].as_str().unwrap();
    assert!(regex_like_user_code(user_code), "{user_code}");
    assert_eq!(code["interval"], 5);
    assert_eq!(
        code["verification_uri_complete"],
        format!("{}/device?user_code={user_code}", app.url(""))
    );
    let device_code = code["device_code"].as_str().unwrap();
    assert_eq!(device_code.len(), 64, "256 bits");
    // Waiting: pending, then slow_down for a poll that comes too soon.
    assert_eq!(
        poll(&app, device_code).await,
        (
            400,
            json!({"error": "authorization_pending", "error_description": "approve the code in agent-budget's dashboard"})
        )
    );
    assert_eq!(poll(&app, device_code).await.1["error"], "slow_down");
    let waiting = app.get("/api/sign-ins").await;
    let item = &waiting["items"][0];
    assert_eq!(
        (&item["user_code"], &item["surface"]),
        (&json!(user_code), &json!("claude_code"))
    );
    assert_eq!(item["user_agent"], "claude-code/2.1.328");
    // The verification page is the dashboard's.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(code["verification_uri_complete"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["location"],
        format!("/agent-budget/#/device?user_code={user_code}")
    );
    // An unknown budget changes nothing: the sign-in still waits.
    let r = admin_post(
        &app,
        &format!("/api/sign-ins/{user_code}/approve"),
        json!({"budget": "nope"}),
    )
    .await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        app.get("/api/sign-ins").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r = admin_post(
        &app,
        &format!("/api/sign-ins/{user_code}/approve"),
        json!({"budget": "dev"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let (status, token) = poll(&app, device_code).await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 30 * 24 * 3600);
    let access = token["access_token"].as_str().unwrap().to_string();
    assert_eq!(access.split('.').count(), 3, "a JWT");
    // Delivered once: the device code is spent.
    assert_eq!(poll(&app, device_code).await.1["error"], "invalid_grant");
    assert_eq!(app.get("/api/sign-ins").await["items"], json!([]));
    // The token is a key of `dev`, charged there and swapped for the real key upstream.
    let r = messages(&app, &access).await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.budget("dev").await["requests"], 1);
    let seen = app.mock.state.seen().pop().unwrap().headers;
    assert_eq!(seen["x-api-key"], "sk-ant-real-key-0123");
    assert!(
        !format!("{seen:?}").contains(&access),
        "the token never goes upstream"
    );
    let keys = app.get("/api/budgets/dev/keys").await;
    assert_eq!(
        (&keys["items"][0]["kind"], &keys["items"][0]["name"]),
        (&json!("sign_in"), &json!("claude_code sign-in"))
    );
    let usage: Value = reqwest::Client::new()
        .get(app.url("/api/oauth/usage"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["extra_usage"]["monthly_limit"], 500);
}

fn regex_like_user_code(c: &str) -> bool {
    c.len() == 9
        && c.as_bytes()[4] == b'-'
        && c.chars()
            .filter(|c| *c != '-')
            .all(|c| "BCDFGHJKLMNPQRSTVWXZ".contains(c))
}

#[tokio::test]
async fn a_denied_sign_in_stops_and_a_revoked_token_is_refused_for_good() {
    let app = gateway().await;
    let code = start(&app).await;
    let r = admin_post(
        &app,
        &format!("/api/sign-ins/{}/deny", code["user_code"].as_str().unwrap()),
        json!({}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        poll(&app, code["device_code"].as_str().unwrap()).await.1["error"],
        "access_denied"
    );

    let code = start(&app).await;
    let typed = code["user_code"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .replace('-', "");
    let r = admin_post(
        &app,
        &format!("/api/sign-ins/{typed}/approve"),
        json!({"budget": "dev"}),
    )
    .await;
    assert_eq!(
        r.status(),
        200,
        "a code is taken as typed: any case, with or without its dash"
    );
    let access = poll(&app, code["device_code"].as_str().unwrap()).await.1["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(messages(&app, &access).await.status(), 200);
    let r = form(&app, "/oauth/revoke", &[("token", &access)]).await;
    assert_eq!(r.status(), 200);
    let r = messages(&app, &access).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["x-should-retry"],
        "false",
        "Claude Code asks to sign in again at once"
    );
    assert_eq!(
        form(&app, "/oauth/revoke", &[("token", &access)])
            .await
            .status(),
        200,
        "again: still 200 (RFC 7009)"
    );
    assert_eq!(app.mock.state.messages(), 1, "nothing more went upstream");
}

#[tokio::test]
async fn bad_sign_in_requests_get_clear_errors_and_code_guessing_is_limited() {
    let app = gateway().await;
    let error = |v: Value| v["error"].as_str().unwrap().to_string();
    let r = form(&app, "/oauth/token", &[("device_code", "x")]).await;
    assert_eq!(
        (r.status().as_u16(), error(r.json().await.unwrap())),
        (400, "invalid_request".into())
    );
    let r = form(&app, "/oauth/token", &[("grant_type", "password")]).await;
    assert_eq!(error(r.json().await.unwrap()), "unsupported_grant_type");
    assert_eq!(poll(&app, "not-a-code").await.1["error"], "invalid_grant");
    let r = form(&app, "/oauth/revoke", &[]).await;
    assert_eq!(r.status(), 400);
    // A forged token (our header, any payload) is no key.
    let forged = format!(
        "{}eyJleHAiOjk5OTk5OTk5OTl9.c2ln",
        agent_budget::service::sign_in::TOKEN_PREFIX
    );
    let r = messages(&app, &forged).await;
    assert_eq!(
        (r.status().as_u16(), &r.headers()["x-should-retry"]),
        (
            401,
            &"false".parse::<reqwest::header::HeaderValue>().unwrap()
        )
    );
    assert_eq!(
        app.mock.state.messages(),
        0,
        "a forged token is never forwarded"
    );
    // Ten wrong codes a minute, then even a right one waits.
    let code = start(&app).await;
    for i in 0..10 {
        let r = admin_post(
            &app,
            &format!("/api/sign-ins/BBBB-BB{i:02}/approve"),
            json!({"budget": "dev"}),
        )
        .await;
        assert_eq!(r.status(), 404);
    }
    let r = admin_post(
        &app,
        &format!(
            "/api/sign-ins/{}/approve",
            code["user_code"].as_str().unwrap()
        ),
        json!({"budget": "dev"}),
    )
    .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "60");
    // The sign-in endpoints are not the admin API: the admin token is not needed, and the
    // approval is not open without it.
    let r = reqwest::Client::new()
        .post(app.url(&format!(
            "/api/sign-ins/{}/approve",
            code["user_code"].as_str().unwrap()
        )))
        .json(&json!({"budget": "dev"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// Approves a started sign-in (`code`, the device authorization's answer) for `budget`.
pub async fn approve(app: &TestApp, code: &Value, budget: &str) {
    let path = format!(
        "/api/sign-ins/{}/approve",
        code["user_code"].as_str().unwrap()
    );
    let r = admin_post(app, &path, json!({ "budget": budget })).await;
    assert_eq!(r.status(), 200);
}

/// A sign-in of `budget`, started, approved and polled: the token endpoint's answer.
pub async fn signed_in(app: &TestApp, budget: &str) -> Value {
    let code = start(app).await;
    approve(app, &code, budget).await;
    let (status, token) = poll(app, code["device_code"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{token}");
    token
}

#[tokio::test]
async fn a_signed_in_requests_project_tag_is_recorded_and_never_reaches_the_upstream() {
    let app = gateway().await;
    let token = signed_in(&app, "dev").await;
    let access = token["access_token"].as_str().unwrap().to_string();
    let payload = access.split('.').nth(1).unwrap();
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        claims["billing_group_tag"], "project",
        "so Claude Code sends the project"
    );
    let mut b = body("claude-haiku-4-5", 10);
    b["tags"] = json!({"project": "alpha"});
    let r = reqwest::Client::new()
        .post(app.url("/v1/messages"))
        .bearer_auth(&access)
        .header(
            "anthropic-beta",
            "request-tags-2026-08-21, fine-grained-tool-streaming-2025-05-14",
        )
        .json(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = app.mock.state.seen().pop().unwrap();
    let sent: Value = serde_json::from_slice(&seen.body).unwrap();
    assert!(sent.get("tags").is_none(), "tags are taken out: {sent}");
    assert_eq!(sent["model"], "claude-haiku-4-5", "the rest goes as it was");
    assert_eq!(
        seen.headers["anthropic-beta"],
        "fine-grained-tool-streaming-2025-05-14"
    );
    assert_eq!(app.usage("dev").await[0]["project"], "alpha");
}

/// Set up for a budget (`claude-code setup --budget dev`), Claude Code's base is
/// `…/agent-budget/b/dev`: every endpoint answers under it, and the sign-in offers `dev`.
#[tokio::test]
async fn a_base_set_up_for_a_budget_offers_that_budget() {
    let app = gateway().await;
    let base = app.url("/b/dev");
    let d: Value = reqwest::get(format!("{base}/.well-known/oauth-authorization-server"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        d["device_authorization_endpoint"],
        format!("{base}/oauth/device_authorization")
    );
    let code = form(
        &app,
        "/b/dev/oauth/device_authorization",
        &[("surface", "claude_code")],
    )
    .await;
    let code: Value = code.json().await.unwrap();
    assert_eq!(app.get("/api/sign-ins").await["items"][0]["budget"], "dev");
    approve(&app, &code, "dev").await;
    let token = form(
        &app,
        "/b/dev/oauth/token",
        &[
            ("grant_type", DEVICE),
            ("device_code", code["device_code"].as_str().unwrap()),
        ],
    )
    .await;
    let access: Value = token.json().await.unwrap();
    let access = access["access_token"].as_str().unwrap();
    let usage = reqwest::Client::new()
        .get(format!("{base}/api/oauth/usage"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(usage.status(), 200);
    let r = reqwest::Client::new()
        .get(format!("{base}/managed/settings"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_refresh_token_trades_once_for_a_new_token_and_the_old_one_stops() {
    let app = gateway().await;
    let first = signed_in(&app, "dev").await;
    let (access, refresh) = (
        first["access_token"].as_str().unwrap(),
        first["refresh_token"].as_str().unwrap(),
    );
    let r = form(
        &app,
        "/oauth/token",
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(r.status(), 200);
    let second: Value = r.json().await.unwrap();
    let renewed = second["access_token"].as_str().unwrap();
    assert_ne!(renewed, access);
    assert_eq!(messages(&app, renewed).await.status(), 200);
    assert_eq!(
        messages(&app, access).await.status(),
        401,
        "the old token is revoked"
    );
    // Spent: the same refresh token again is the protocol's cue to sign in again.
    let r = form(
        &app,
        "/oauth/token",
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    // Signing out with the refresh token ends the sign-in too.
    let next = second["refresh_token"].as_str().unwrap();
    assert_eq!(
        form(
            &app,
            "/oauth/revoke",
            &[("token", next), ("token_type_hint", "refresh_token")]
        )
        .await
        .status(),
        200
    );
    assert_eq!(messages(&app, renewed).await.status(), 401);
    let keys = app.get("/api/budgets/dev/keys").await;
    let live = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["revoked_at"].is_null())
        .count();
    assert_eq!(live, 0, "every token of the sign-in is revoked");
}
