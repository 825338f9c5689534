//! DNS-rebinding, CSRF and admin-token guards.

use crate::helpers::*;
use serde_json::{Value, json};

/// Every route the server has (one concrete path each), plus an unknown one: the guards sit
/// in front of routing, so they must hold for all of them.
const ROUTES: [(&str, &str); 32] = [
    ("GET", "/api/hello"),
    ("HEAD", "/api/hello"),
    ("GET", "/agent-budget/api/hello"),
    ("GET", "/agent-budget/health"),
    ("POST", "/agent-budget/v1/messages"),
    ("POST", "/agent-budget/b/default/v1/messages"),
    ("POST", "/agent-budget/v1/messages/count_tokens"),
    ("POST", "/agent-budget/b/default/v1/messages/count_tokens"),
    ("GET", "/agent-budget/v1/models"),
    ("GET", "/agent-budget/v1/models/claude-sonnet-4-6"),
    ("GET", "/agent-budget/b/default/v1/models"),
    ("POST", "/agent-budget/v1/messages/batches"),
    ("GET", "/agent-budget/api/budgets"),
    ("POST", "/agent-budget/api/budgets"),
    ("GET", "/agent-budget/api/budgets/default"),
    ("PATCH", "/agent-budget/api/budgets/default"),
    ("DELETE", "/agent-budget/api/budgets/default"),
    ("GET", "/agent-budget/api/budgets/default/usage"),
    ("GET", "/agent-budget/api/budgets/default/usage.csv"),
    ("GET", "/agent-budget/api/budgets/default/badge"),
    ("POST", "/agent-budget/api/budgets/default/test-webhook"),
    ("GET", "/agent-budget/api/alerts"),
    ("GET", "/agent-budget/api/events"),
    ("GET", "/agent-budget/api/pricing"),
    ("PUT", "/agent-budget/api/pricing"),
    ("GET", "/agent-budget/api/stats"),
    ("GET", "/agent-budget/api/spend"),
    ("GET", "/agent-budget/api/settings"),
    ("GET", "/agent-budget"),
    ("GET", "/agent-budget/"),
    ("GET", "/agent-budget/budgets/default"),
    ("GET", "/no/such/route"),
];

fn raw_url(app: &TestApp, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", app.port)
}

#[tokio::test]
async fn a_foreign_host_is_refused_on_every_route() {
    let app = spawn_with(|s| s.allowed_hosts = vec!["budget.internal".into()]).await;
    for (method, path) in ROUTES {
        let r = app
            .client
            .request(method.parse().unwrap(), raw_url(&app, path))
            .header("host", "evil.example:4727")
            .json(&body("m", 1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{method} {path}");
        if method == "HEAD" {
            continue;
        }
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["type"], "permission_error");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("evil.example")
        );
    }
    assert_eq!(
        app.mock.state.messages()
            + app
                .mock
                .state
                .count_tokens
                .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let ok = app
        .client
        .get(app.url("/health"))
        .header("host", "budget.internal:4727")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap(), json!({"ok": true}));
    assert!(ok_no_cors(&app).await);
}

async fn ok_no_cors(app: &TestApp) -> bool {
    let r = app
        .client
        .get(app.url("/api/budgets"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    r.headers().get("access-control-allow-origin").is_none()
}

#[tokio::test]
async fn a_foreign_origin_cannot_change_anything() {
    let app = spawn_app().await;
    for (method, path) in ROUTES.iter().filter(|(m, _)| !["GET", "HEAD"].contains(m)) {
        let r = app
            .client
            .request(method.parse().unwrap(), raw_url(&app, path))
            .header("origin", "https://evil.example")
            .json(&json!({"name": "evil", "max_dollars": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{method} {path}");
    }
    assert_eq!(
        app.get("/api/budgets").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "nothing was created"
    );
    assert_eq!(app.mock.state.messages(), 0, "nothing was forwarded");
    // Reads are allowed (the page cannot see them): no CORS grant on any route.
    for (method, path) in ROUTES.iter().filter(|(m, _)| *m == "GET") {
        let r = app
            .client
            .get(raw_url(&app, path))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "{method} {path}"
        );
    }
    let local = app
        .client
        .post(app.url("/api/budgets"))
        .header("origin", &format!("http://localhost:{}", app.port))
        .json(&json!({"name": "ok", "max_dollars": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), 201);
}

#[tokio::test]
async fn the_admin_token_guards_the_api_but_not_the_proxy() {
    let token = "0123456789abcdef-token";
    let app = spawn_with(|s| s.admin_token = Some(token.into())).await;
    let r = app
        .client
        .get(app.url("/api/budgets"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "authentication_error"
    );
    let wrong = app
        .client
        .get(app.url("/api/budgets"))
        .bearer_auth("0123456789abcdef-tokem")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = app
        .client
        .get(app.url("/api/budgets"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    // Every /api route (but the discovery `hello`) wants the token.
    for (method, path) in ROUTES
        .iter()
        .filter(|(_, p)| p.starts_with("/agent-budget/api/") && !p.ends_with("/hello"))
    {
        let r = app
            .client
            .request(method.parse().unwrap(), raw_url(&app, path))
            .json(&json!({"name": "x", "max_dollars": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path}");
    }
    // The proxy carries the client's Anthropic key in Authorization; it is not ours to check.
    let proxied = app
        .client
        .post(app.url("/v1/messages"))
        .bearer_auth("sk-ant-key")
        .json(&body("claude-haiku-4-5", 5))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 200);
    assert_eq!(
        app.client
            .get(app.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
