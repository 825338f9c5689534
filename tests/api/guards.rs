//! DNS-rebinding, CSRF and admin-token guards.

use crate::helpers::*;
use serde_json::{Value, json};

/// Every route the server has (one concrete path each), plus an unknown one: the guards sit
/// in front of routing, so they must hold for all of them.
const ROUTES: [(&str, &str); 36] = [
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
    ("POST", "/agent-budget/api/sign-in-links"),
    ("POST", "/agent-budget/api/sign-out"),
    ("GET", "/agent-budget/sign-in"),
    ("POST", "/agent-budget/sign-in"),
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

fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Admin authentication is on by default (PRODUCT.md §12): a token made on first start, a
/// one-time link that signs a browser in, and nothing else opens `/api/*` — not a virtual key,
/// not the client's own key.
#[tokio::test]
async fn the_admin_api_needs_the_token_or_a_signed_in_session_by_default() {
    let app = spawn_app().await;
    let token = app.admin_token.clone().unwrap();
    assert_eq!(token.len(), 64, "made on first start");
    let c = plain();
    let r = c.get(app.url("/api/budgets")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("authentication_error") && text.contains("admin-token"),
        "{text}"
    );
    // Every /api route but Claude Code's probe and the embeddable badge.
    for (method, path) in ROUTES
        .iter()
        .filter(|(_, p)| p.starts_with("/agent-budget/api/"))
    {
        let r = c
            .request(method.parse().unwrap(), raw_url(&app, path))
            .json(&json!({"name": "x", "max_dollars": 1}))
            .send()
            .await
            .unwrap();
        let open = path.ends_with("/hello") || (path.ends_with("/badge") && *method == "GET");
        assert_eq!(r.status() == 401, !open, "{method} {path}: {}", r.status());
    }
    for wrong in ["0123456789abcdef-tokem", "", &token[1..]] {
        let r = c
            .get(app.url("/api/budgets"))
            .bearer_auth(wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{wrong}");
    }
    let r = c
        .get(app.url("/api/budgets"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Settings says where the token is, for scripts (the Setup page shows it).
    let file = app.dir.path().join(agent_budget::admin::TOKEN_FILE);
    assert_eq!(
        app.get("/api/settings").await["admin_token_file"],
        file.display().to_string()
    );
    // The dashboard, its files and health stay open.
    for path in ["/health", "/", "/api/budgets/default/badge"] {
        let r = c.get(app.url(path)).send().await.unwrap();
        assert_ne!(r.status(), 401, "{path}");
    }
}

#[tokio::test]
async fn a_one_time_link_signs_a_browser_in_once_and_sign_out_ends_it() {
    let app = spawn_app().await;
    let token = app.admin_token.clone().unwrap();
    let c = plain();
    let url = sign_in_link(app.port, &token).await;
    assert!(url.contains("/agent-budget/sign-in?code="), "{url}");
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/agent-budget/");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/agent-budget/api"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    let again = c.get(&url).send().await.unwrap();
    assert_eq!(again.status(), 401, "a link works once");
    let with_cookie = |path: &str| {
        c.get(app.url(path))
            .header("cookie", session.clone())
            .send()
    };
    assert_eq!(with_cookie("/api/settings").await.unwrap().status(), 200);
    // The cookie is the dashboard's: a proxied request never forwards it.
    let r = c
        .post(app.url("/v1/messages"))
        .header("x-api-key", "sk-test")
        .header("cookie", session.clone())
        .json(&body("claude-haiku-4-5", 5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(app.mock.state.seen()[0].headers.get("cookie").is_none());
    let out = c
        .post(app.url("/api/sign-out"))
        .header("cookie", session.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert_eq!(with_cookie("/api/settings").await.unwrap().status(), 401);
    // The token typed into the dashboard's form signs in too; a wrong one does not.
    let wrong = c
        .post(app.url("/sign-in"))
        .json(&json!({"token": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let typed = c
        .post(app.url("/sign-in"))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(typed.status(), 204);
    assert!(
        typed.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("HttpOnly")
    );
    // A page on another origin cannot sign a browser in.
    let csrf = c
        .post(app.url("/sign-in"))
        .header("origin", "https://evil.example")
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(csrf.status(), 403);
}

/// An agent given only a capped virtual key (or its own Anthropic key) cannot mint itself a
/// key, raise its cap or read the webhook secret; and the admin token is no proxy credential.
#[tokio::test]
async fn a_local_agent_cannot_raise_its_own_cap_and_the_token_is_no_api_key() {
    let app = spawn_with(|s| {
        s.upstream_key = Some(agent_budget::config::Secret::new("sk-ant-real".into()))
    })
    .await;
    let token = app.admin_token.clone().unwrap();
    app.create_budget(json!({"name": "capped", "max_dollars": "1"}))
        .await;
    let made: Value = app
        .client
        .post(app.url("/api/budgets/capped/keys"))
        .json(&json!({"name": "agent"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = made["key"].as_str().unwrap();
    let c = plain();
    for (method, path, body) in [
        ("POST", "/api/budgets/capped/keys", json!({"name": "mine"})),
        (
            "PATCH",
            "/api/budgets/capped",
            json!({"max_dollars": "9000000"}),
        ),
        ("GET", "/api/settings", json!(null)),
        (
            "POST",
            "/api/budgets",
            json!({"name": "free", "max_dollars": "9000000"}),
        ),
    ] {
        for auth in [key, "sk-ant-mine"] {
            let r = c
                .request(method.parse().unwrap(), app.url(path))
                .bearer_auth(auth)
                .header("x-api-key", auth)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{method} {path}");
        }
    }
    assert_eq!(app.budget("capped").await["max_dollars"], "1");
    for (name, value) in [
        ("x-api-key", token.clone()),
        ("authorization", format!("Bearer {token}")),
    ] {
        let r = c
            .post(app.url("/v1/messages"))
            .header(name, value)
            .json(&body("claude-haiku-4-5", 5))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{name}");
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("admin token is not an API key")
        );
    }
    assert!(
        app.mock.state.seen().is_empty(),
        "the admin token never went upstream"
    );
}

#[tokio::test]
async fn open_admin_restores_an_open_loopback_api() {
    let app = spawn_with(|s| s.open_admin = true).await;
    assert!(app.admin_token.is_none());
    let r = plain().get(app.url("/api/budgets")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        !app.dir
            .path()
            .join(agent_budget::admin::TOKEN_FILE)
            .exists()
    );
    assert_eq!(
        app.get("/api/settings").await["admin_token_file"],
        Value::Null
    );
}

#[tokio::test]
async fn a_given_admin_token_is_used_instead_of_the_file() {
    let token = "0123456789abcdef-token";
    let app = spawn_with(|s| s.admin_token = Some(token.into())).await;
    let c = plain();
    assert_eq!(
        c.get(app.url("/api/budgets"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = c
        .get(app.url("/api/budgets"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.get("/api/settings").await["admin_token_file"],
        Value::Null,
        "a token given by flag is in no file"
    );
    // The proxy carries the client's Anthropic key in Authorization; it is not ours to check.
    let proxied = c
        .post(app.url("/v1/messages"))
        .bearer_auth("sk-ant-key")
        .json(&body("claude-haiku-4-5", 5))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 200);
}

/// `serve` prints a sign-in link at start, and `agent-budget dashboard` asks the running
/// server for a fresh one with the token from the data directory.
#[tokio::test]
async fn agent_budget_dashboard_prints_a_link_that_signs_a_browser_in() {
    use crate::durability::{fixture, serve};
    let (_mock, dir, args) = fixture().await;
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--open-admin")
        .collect();
    let p = serve(&args);
    let printed = || {
        p.log
            .lock()
            .unwrap()
            .contains("/agent-budget/sign-in?code=")
    };
    for _ in 0..200 {
        if printed() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(printed(), "serve prints a sign-in link");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent-budget"))
        .args(["dashboard", "--no-browser", "--port", &p.port.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("AGENT_BUDGET_PORT")
        .env_remove("AGENT_BUDGET_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .replace("localhost", "127.0.0.1");
    let c = plain();
    let r = c.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303, "{link}");
    let session = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let api = format!("http://127.0.0.1:{}/agent-budget/api/budgets", p.port);
    assert_eq!(
        c.get(&api)
            .header("cookie", session)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Another data directory has no token: the error names the file.
    let other = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent-budget"))
        .args(["dashboard", "--no-browser", "--port", &p.port.to_string()])
        .arg("--data-dir")
        .arg(other.path())
        .env_remove("AGENT_BUDGET_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin-token"));
}

/// The desktop window opens a download in the browser through a link that signs the browser
/// in and goes on to it; a link never redirects off the server.
#[tokio::test]
async fn a_sign_in_link_goes_on_to_a_local_path_only() {
    let app = spawn_app().await;
    let service = app.server.as_ref().unwrap().service().clone();
    let csv = "/agent-budget/api/budgets/default/usage.csv";
    let link = agent_budget::api::session::new_link_to(&service, Some(csv))
        .unwrap()
        .replace("localhost", "127.0.0.1");
    let c = plain();
    let r = c.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], csv);
    let session = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let export = c
        .get(app.url("/api/budgets/default/usage.csv"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    assert!(export.text().await.unwrap().starts_with("id,created_at"));
    // A made-up `next` on a real link goes to the dashboard, never elsewhere.
    for next in ["https://evil.example/", "%2F%2Fevil.example", "/elsewhere"] {
        let fresh = agent_budget::api::session::new_link(&service)
            .unwrap()
            .replace("localhost", "127.0.0.1");
        let r = c.get(format!("{fresh}&next={next}")).send().await.unwrap();
        assert_eq!(r.headers()["location"], "/agent-budget/", "{next}");
    }
}

/// Switches set in the environment as `1`, as the README shows them (the desktop app reads
/// only the environment, through the same definitions).
#[tokio::test]
async fn switches_set_in_the_environment_as_1_are_on() {
    use crate::durability::{fixture, serve_with, url};
    let (_mock, _dir, args) = fixture().await;
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !["--open-admin", "--no-keychain"].contains(a))
        .collect();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_agent-budget"));
    cmd.arg("serve")
        .args(&args)
        .env("AGENT_BUDGET_OPEN_ADMIN", "1")
        .env("AGENT_BUDGET_NO_KEYCHAIN", "1")
        .env("AGENT_BUDGET_REQUIRE_BUDGET", "1");
    let p = serve_with(cmd);
    let r = plain()
        .get(url(p.port, "/api/budgets"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "AGENT_BUDGET_OPEN_ADMIN=1 opens the API");
    let untagged = plain()
        .post(url(p.port, "/v1/messages"))
        .header("x-api-key", "sk-test")
        .json(&body("claude-haiku-4-5", 5))
        .send()
        .await
        .unwrap();
    assert_eq!(
        untagged.status(),
        400,
        "AGENT_BUDGET_REQUIRE_BUDGET=1 is on"
    );
}

/// The desktop app's dashboard calls the REST API in-process: the same routes, answers and
/// errors as over HTTP, as the admin, and only below `/api/`.
#[tokio::test]
async fn the_in_process_api_is_the_rest_api_as_its_admin() {
    let app = spawn_app().await;
    let api = app.server.as_ref().unwrap().api();
    let made = api
        .call(
            "POST",
            "/api/budgets",
            Some(json!({"name": "desk", "max_dollars": "5"})),
        )
        .await
        .unwrap();
    assert_eq!(
        (&made["name"], &made["max_dollars"]),
        (&json!("desk"), &json!("5"))
    );
    let over_http = app.get("/api/budgets/desk").await;
    let in_process = api.call("GET", "/api/budgets/desk", None).await.unwrap();
    assert_eq!(in_process["id"], over_http["id"]);
    assert_eq!(
        api.call("DELETE", "/api/budgets/desk", None).await.unwrap(),
        Value::Null,
        "a 204 is null"
    );
    let missing = api
        .call("GET", "/api/budgets/desk", None)
        .await
        .unwrap_err();
    assert_eq!(
        (missing.status.as_u16(), missing.kind),
        (404, "not_found_error")
    );
    let bad = api
        .call(
            "POST",
            "/api/budgets",
            Some(json!({"name": "x", "max_dollars": "0"})),
        )
        .await
        .unwrap_err();
    assert_eq!(bad.kind, "invalid_request_error");
    assert!(bad.message.contains("max_dollars"), "{}", bad.message);
    let proxied = api
        .call("POST", "/v1/messages", Some(json!({})))
        .await
        .unwrap_err();
    assert_eq!(
        proxied.status.as_u16(),
        404,
        "only the API is served in-process"
    );
}
