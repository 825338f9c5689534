//! Claude Code's gateway protocol with a virtual key (docs/claude-code.md): the budget's
//! standing in the usage-limit headers and at `/api/oauth/usage`, the protocol's 429 at the
//! cap, telemetry and managed settings, and the agent headers on each record.

use crate::helpers::*;
use agent_budget::config::Secret;
use serde_json::{Value, json};

const REAL: &str = "sk-ant-real-key-0123";

/// A proxy with a real key and a $1 daily budget `dev` with a virtual key.
async fn gateway() -> (TestApp, String) {
    let app = spawn_with(|s| s.upstream_key = Some(Secret::new(REAL.into()))).await;
    app.create_budget(json!({"name": "dev", "max_dollars": "1", "period": "daily"}))
        .await;
    let made = app.create_key("dev", "claude").await;
    (app, made["key"].as_str().unwrap().to_string())
}

/// A request as Claude Code sends it in gateway mode, reported to cost `output` Haiku 4.5
/// output tokens ($5 per million).
async fn claude(app: &TestApp, key: &str, max_tokens: u64, output: u64) -> reqwest::Response {
    let script = json!({"usage": {"input_tokens": 0, "output_tokens": output}});
    reqwest::Client::new()
        .post(app.url("/v1/messages?beta=true"))
        .bearer_auth(key)
        .header("anthropic-version", "2023-06-01")
        .header("x-claude-code-session-id", "session-1")
        .header("x-mock", script.to_string())
        .json(&body("claude-haiku-4-5", max_tokens))
        .send()
        .await
        .unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

const STATUS: &str = "anthropic-ratelimit-unified-status";
const UTILIZATION: &str = "anthropic-ratelimit-unified-overage-utilization";
const SURPASSED: &str = "anthropic-ratelimit-unified-overage-surpassed-threshold";
const CLAIM: &str = "anthropic-ratelimit-unified-representative-claim";
const RESET: &str = "anthropic-ratelimit-unified-overage-reset";

#[tokio::test]
async fn a_keyed_request_carries_its_budgets_standing_and_not_the_organisations() {
    let (app, key) = gateway().await;
    // Each answer tells the standing before its own charge: 0, then $0.80 of $1, then $0.96.
    let first = claude(&app, &key, 10, 160_000).await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        (header(&first, STATUS), header(&first, UTILIZATION)),
        (Some("allowed"), Some("0"))
    );
    assert_eq!(header(&first, SURPASSED), None, "below 75 % there is none");
    assert_eq!(header(&first, CLAIM), Some("overage"));
    for (name, _) in mock_upstream::RATE_LIMITS {
        assert_eq!(
            header(&first, name),
            None,
            "the organisation's {name} is not the user's"
        );
    }
    let at_80 = claude(&app, &key, 10, 32_000).await;
    assert_eq!(
        (
            header(&at_80, STATUS),
            header(&at_80, UTILIZATION),
            header(&at_80, SURPASSED)
        ),
        (Some("allowed_warning"), Some("0.8"), Some("0.75"))
    );
    let at_96 = claude(&app, &key, 10, 0).await;
    assert_eq!(
        (header(&at_96, UTILIZATION), header(&at_96, SURPASSED)),
        (Some("0.96"), Some("0.95"))
    );
    let reset: i64 = header(&at_96, RESET).unwrap().parse().unwrap();
    assert_eq!(
        header(&at_96, "anthropic-ratelimit-unified-reset"),
        Some(reset.to_string().as_str())
    );
    let resets_at = app.budget("dev").await["resets_at"]
        .as_str()
        .unwrap()
        .to_string();
    let resets_at = chrono::DateTime::parse_from_rfc3339(&resets_at).unwrap();
    assert_eq!(
        reset,
        resets_at.timestamp(),
        "the budget's reset, in Unix seconds"
    );
}

#[tokio::test]
async fn a_request_with_its_own_key_keeps_the_upstreams_headers_untouched() {
    let (app, _) = gateway().await;
    let r = app
        .send(Some("dev"), &body("claude-haiku-4-5", 10), None)
        .await;
    assert_eq!(r.status(), 200);
    for (name, value) in mock_upstream::RATE_LIMITS {
        assert_eq!(header(&r, name), Some(value));
    }
    assert_eq!(
        header(&r, STATUS),
        None,
        "no standing for a client's own key"
    );
}

#[tokio::test]
async fn at_the_cap_the_refusal_is_the_protocols_429_with_our_message() {
    let (app, key) = gateway().await;
    assert_eq!(claude(&app, &key, 10, 192_000).await.status(), 200); // $0.96
    let r = claude(&app, &key, 10_000, 0).await; // up to $0.05 more
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, STATUS), Some("rejected"));
    assert_eq!(
        (header(&r, UTILIZATION), header(&r, SURPASSED)),
        (Some("1"), Some("1"))
    );
    assert_eq!(
        header(&r, "anthropic-ratelimit-unified-overage-period"),
        Some("daily")
    );
    assert_eq!(header(&r, "x-should-retry"), Some("false"));
    assert!(header(&r, "retry-after").is_some() && header(&r, RESET).is_some());
    // Without these Claude Code prints the message as it is, not its own.
    assert_eq!(header(&r, CLAIM), None);
    assert_eq!(
        header(&r, "anthropic-ratelimit-unified-overage-status"),
        None
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "billing_error");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("budget 'dev'") && msg.contains("resets"),
        "{msg}"
    );
}

async fn usage_with(app: &TestApp, bearer: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(app.url("/api/oauth/usage"))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn oauth_usage_answers_the_keys_budget_in_cents_with_the_headers_reset() {
    let (app, key) = gateway().await;
    assert_eq!(claude(&app, &key, 10, 164_000).await.status(), 200); // $0.82
    let probe = claude(&app, &key, 10, 0).await;
    let reset: i64 = header(&probe, RESET).unwrap().parse().unwrap();
    let r = usage_with(&app, &key).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-control"), Some("no-store"));
    let u: Value = r.json().await.unwrap();
    let extra = &u["extra_usage"];
    assert_eq!(
        (
            &extra["monthly_limit"],
            &extra["used_credits"],
            &extra["utilization"]
        ),
        (&json!(100), &json!(82), &json!(82))
    );
    let row = &u["limits"][0];
    assert_eq!(
        (&row["group"], &row["percent"]),
        (&json!("daily"), &json!(82))
    );
    let at = chrono::DateTime::parse_from_rfc3339(row["resets_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        at.timestamp(),
        reset,
        "paired with the header to the second"
    );
    assert_eq!(row["severity"], "warning");
    // Only a virtual key (or sign-in) opens it: not the admin token, not a revoked key.
    let admin = usage_with(&app, app.admin_token.as_deref().unwrap()).await;
    assert_eq!(admin.status(), 401);
    assert_eq!(header(&admin, "x-should-retry"), Some("false"));
    let keys = app.get("/api/budgets/dev/keys").await;
    let id = keys["items"][0]["id"].as_i64().unwrap();
    let revoked = app
        .client
        .delete(app.url(&format!("/api/budgets/dev/keys/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let r = usage_with(&app, &key).await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "x-should-retry")),
        (401, Some("false"))
    );
}

#[tokio::test]
async fn an_uncapped_budget_answers_its_spend_today_this_week_and_this_month() {
    let app = spawn_with(|s| s.upstream_key = Some(Secret::new(REAL.into()))).await;
    let made = app.create_key("default", "claude").await;
    let key = made["key"].as_str().unwrap();
    assert_eq!(claude(&app, key, 10, 248_000).await.status(), 200); // $1.24
    let probe = claude(&app, key, 10, 0).await;
    assert_eq!(header(&probe, STATUS), None, "no standing without a cap");
    let u: Value = usage_with(&app, key).await.json().await.unwrap();
    assert_eq!(u["limits"], json!([]));
    let extra = &u["extra_usage"];
    assert_eq!(
        (&extra["monthly_limit"], &extra["utilization"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(extra["used_credits"], 124);
    assert_eq!(extra["daily"]["used_credits"], 124);
    assert_eq!(extra["weekly"]["used_credits"], 124);
}

#[tokio::test]
async fn telemetry_is_taken_and_managed_settings_are_none() {
    let (app, key) = gateway().await;
    let c = reqwest::Client::new();
    for signal in ["metrics", "logs", "traces"] {
        let r = c
            .post(app.url(&format!("/v1/{signal}")))
            .bearer_auth(&key)
            .header("content-type", "application/x-protobuf")
            .body(vec![0x0a, 0x00])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{signal}");
        let r = c
            .post(app.url(&format!("/v1/{signal}")))
            .bearer_auth(&key)
            .json(&json!({"resourceMetrics": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{signal}");
        assert_eq!(r.text().await.unwrap(), "{}");
    }
    let r = c
        .get(app.url("/managed/settings"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no policy: the protocol's clean answer");
    assert_eq!(app.mock.state.messages(), 0, "nothing went upstream");
}

#[tokio::test]
async fn each_record_says_which_agent_of_the_session_sent_it() {
    let (app, key) = gateway().await;
    let r = reqwest::Client::new()
        .post(app.url("/v1/messages"))
        .bearer_auth(&key)
        .header("x-claude-code-session-id", "session-1")
        .header("x-claude-code-agent-id", "agent-7")
        .header("x-claude-code-parent-agent-id", "agent-1")
        .header("x-claude-code-agent-type", "general-purpose")
        .json(&body("claude-haiku-4-5", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let main = claude(&app, &key, 10, 0).await;
    assert_eq!(main.status(), 200);
    let records = app.usage("dev").await;
    let sub = records.iter().find(|r| r["agent_id"] == "agent-7").unwrap();
    assert_eq!(
        (&sub["parent_agent_id"], &sub["agent_type"], &sub["session"]),
        (
            &json!("agent-1"),
            &json!("general-purpose"),
            &json!("session-1")
        )
    );
    let other = records.iter().find(|r| r["agent_id"].is_null()).unwrap();
    assert_eq!(
        (&other["agent_type"], &other["project"]),
        (&Value::Null, &Value::Null)
    );
}
