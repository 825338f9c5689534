//! `spawn_app()`: a server on port 0 with its own data dir, against its own mock upstream.

use agent_budget::{RunningServer, Settings};
use mock_upstream::Mock;
use serde_json::{Value, json};
use std::time::Duration;

pub struct TestApp {
    pub server: Option<RunningServer>,
    pub mock: Mock,
    pub port: u16,
    /// Signed in to the dashboard (its session cookie goes to `/api/*` only).
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    /// The admin token (None with `--open-admin`).
    pub admin_token: Option<String>,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let mock = mock_upstream::start(0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    start_on(mock, dir, adjust).await
}

pub async fn start_on(
    mock: Mock,
    dir: tempfile::TempDir,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    let mut settings = Settings {
        port: Some(0),
        data_dir: Some(dir.path().to_path_buf()),
        upstream: Some(mock.url()),
        time_zone: Some("Europe/Berlin".into()),
        // Hermetic: never the keychain of whoever runs the tests.
        no_keychain: true,
        ..Settings::default()
    };
    adjust(&mut settings);
    let server = RunningServer::bind(settings.clone().validate().unwrap())
        .await
        .unwrap();
    let port = server.port();
    let admin_token = (!settings.open_admin).then(|| admin_token_of(&settings, &dir));
    let client = signed_in_client(port, admin_token.as_deref()).await;
    TestApp {
        server: Some(server),
        mock,
        port,
        client,
        dir,
        admin_token,
    }
}

fn admin_token_of(s: &Settings, dir: &tempfile::TempDir) -> String {
    let data = s
        .data_dir
        .clone()
        .unwrap_or_else(|| dir.path().to_path_buf());
    s.admin_token.clone().unwrap_or_else(|| {
        std::fs::read_to_string(data.join(agent_budget::admin::TOKEN_FILE))
            .unwrap()
            .trim()
            .to_string()
    })
}

/// A one-time sign-in link from `POST /api/sign-in-links`, on 127.0.0.1.
pub async fn sign_in_link(port: u16, token: &str) -> String {
    let link: Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!(
            "http://127.0.0.1:{port}/agent-budget/api/sign-in-links"
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    link["url"]
        .as_str()
        .unwrap()
        .replace("localhost", "127.0.0.1")
}

/// A client signed in the way a browser is: a one-time link, then the session cookie.
pub async fn signed_in_client(port: u16, token: Option<&str>) -> reqwest::Client {
    let client = reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .build()
        .unwrap();
    let Some(token) = token else { return client };
    let base = format!("http://127.0.0.1:{port}/agent-budget");
    client
        .get(sign_in_link(port, token).await)
        .send()
        .await
        .unwrap();
    let r = client
        .get(format!("{base}/api/budgets"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the session cookie signs the client in");
    client
}

/// `POST /v1/messages` with a virtual key or a sign-in's token as the API key: haiku,
/// `max_tokens` reserved at worst, `output` output tokens charged ($5 per million).
pub async fn send_keyed(
    app: &TestApp,
    key: &str,
    max_tokens: u64,
    output: u64,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.url("/v1/messages"))
        .header("x-api-key", key)
        .header("x-mock", output_of(output).to_string())
        .json(&body("claude-haiku-4-5", max_tokens))
        .send()
        .await
        .unwrap()
}

/// A small Messages request body.
pub fn body(model: &str, max_tokens: u64) -> Value {
    json!({"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "Hello"}]})
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/agent-budget{path}", self.port)
    }

    /// `POST /v1/messages` with an optional budget header and mock script.
    pub async fn send(
        &self,
        budget: Option<&str>,
        body: &Value,
        script: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url("/v1/messages"))
            .header("x-api-key", "sk-test")
            .header("anthropic-version", "2023-06-01")
            .json(body);
        if let Some(b) = budget {
            req = req.header("x-budget-id", b);
        }
        if let Some(s) = script {
            req = req.header("x-mock", s.to_string());
        }
        req.send().await.unwrap()
    }

    /// `PATCH` an admin resource with a JSON body.
    pub async fn patch(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .patch(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> Value {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// `GET /agent-budget/metrics` with the admin token: the text format.
    pub async fn metrics(&self) -> String {
        let r = reqwest::Client::new()
            .get(self.url("/metrics"))
            .bearer_auth(self.admin_token.as_deref().unwrap_or_default())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    pub async fn get_text(&self, path: &str) -> String {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.text().await.unwrap()
    }

    pub async fn create_budget(&self, spec: Value) -> Value {
        let r = self
            .client
            .post(self.url("/api/budgets"))
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        r.json().await.unwrap()
    }

    /// Makes a virtual key of `budget`: the answer, with the key.
    pub async fn create_key(&self, budget: &str, name: &str) -> Value {
        let r = self
            .client
            .post(self.url(&format!("/api/budgets/{budget}/keys")))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        r.json().await.unwrap()
    }

    pub async fn budget(&self, key: &str) -> Value {
        self.get(&format!("/api/budgets/{key}")).await
    }

    pub async fn usage(&self, key: &str) -> Vec<Value> {
        self.get(&format!("/api/budgets/{key}/usage?limit=500"))
            .await["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits until this proxy has budget `name`, made on another proxy of its team.
    pub async fn follows_budget(&self, name: &str) {
        let path = format!("/api/budgets/{name}");
        self.eventually("the proxy to follow the team's budget", || async {
            let r = self.client.get(self.url(&path)).send().await.unwrap();
            r.status() == 200
        })
        .await;
    }

    /// Polls until `f` holds (for effects that complete after a response, like a client
    /// hang-up being noticed); fails after 10 s.
    pub async fn eventually<F, Fut>(&self, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for: {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) -> (Mock, tempfile::TempDir) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        (self.mock, self.dir)
    }
}

/// The mock's script for a response that reports `output` output tokens and no input (Haiku
/// 4.5 output is $5 per million tokens).
pub fn output_of(output: u64) -> Value {
    serde_json::json!({"usage": {"input_tokens": 0, "output_tokens": output}})
}

/// A refusal's status, checked, and its message.
pub async fn refusal(r: reqwest::Response, status: u16) -> String {
    assert_eq!(r.status(), status);
    let body: Value = r.json().await.unwrap();
    body["error"]["message"].as_str().unwrap().to_string()
}

pub fn dollars(v: &Value) -> agent_budget::money::Money {
    agent_budget::money::Money::parse(
        v.as_str()
            .unwrap_or_else(|| panic!("not a decimal string: {v}")),
    )
    .unwrap()
}
