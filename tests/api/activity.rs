//! What the money bought (docs/claude-code.md): Claude Code's telemetry kept per session and
//! shown beside its spend, a session's spend split between its agents, spend per project.

use crate::helpers::*;
use crate::sign_in::signed_in;
use agent_budget::config::Secret;
use agent_budget::money::Money;
use serde_json::{Value, json};

/// The metrics Claude Code 2.1.328 exported after writing a file: 4 lines added, 1.224 s
/// active, for its session `7ded241e-…` (captured from the real client).
const EXPORT: &str = include_str!("../../src/otlp/fixtures/claude-code-2.1.328-metrics.json");
const PROTOBUF: &[u8] = include_bytes!("../../src/otlp/fixtures/claude-code-2.1.328-metrics.pb");
const SESSION: &str = "7ded241e-8719-4422-80cf-24356cfbd3fa";
const PROTOBUF_SESSION: &str = "d9d32568-75ba-4ed0-bb6f-b5c419d6edfc";

async fn gateway() -> (TestApp, String) {
    let app =
        spawn_with(|s| s.upstream_key = Some(Secret::new("sk-ant-real-key-0123".into()))).await;
    app.create_budget(json!({"name": "dev", "max_dollars": "5", "period": "daily"}))
        .await;
    let key = app.create_key("dev", "claude").await["key"]
        .as_str()
        .unwrap()
        .to_string();
    (app, key)
}

/// A Messages request of `session`, from `agent` (None: the main agent), costing `output`
/// Haiku 4.5 output tokens ($5 per million).
async fn turn(app: &TestApp, bearer: &str, session: &str, agent: Option<&str>, output: u64) {
    let mut req = reqwest::Client::new()
        .post(app.url("/v1/messages"))
        .bearer_auth(bearer)
        .header("x-claude-code-session-id", session)
        .header("x-mock", output_of(output).to_string());
    if let Some(a) = agent {
        req = req
            .header("x-claude-code-agent-id", a)
            .header("x-claude-code-parent-agent-id", "main")
            .header("x-claude-code-agent-type", "general-purpose");
    }
    let r = req
        .json(&body("claude-haiku-4-5", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn export(app: &TestApp, bearer: Option<&str>, body: Vec<u8>, kind: &str) {
    let mut req = reqwest::Client::new()
        .post(app.url("/v1/metrics"))
        .header("content-type", kind);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let r = req.body(body).send().await.unwrap();
    assert_eq!(r.status(), 200, "telemetry is always answered 200");
}

async fn session(app: &TestApp, id: &str) -> Value {
    let page = app.get("/api/budgets/dev/sessions").await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no session {id} in {page}"))
}

#[tokio::test]
async fn claude_codes_telemetry_is_kept_per_session_beside_its_spend() {
    let (app, key) = gateway().await;
    turn(&app, &key, SESSION, None, 1000).await;
    assert_eq!(
        session(&app, SESSION).await["activity"],
        Value::Null,
        "none sent yet"
    );
    export(
        &app,
        Some(&key),
        EXPORT.as_bytes().to_vec(),
        "application/json",
    )
    .await;
    let s = session(&app, SESSION).await;
    assert_eq!(
        s["activity"],
        json!({"lines_added": 4, "lines_removed": 0, "commits": 0, "pull_requests": 0, "active_seconds": 1})
    );
    assert_eq!(s["spent_dollars"], "0.005");
    // Claude Code sends deltas: a second export adds to the first.
    export(
        &app,
        Some(&key),
        EXPORT.as_bytes().to_vec(),
        "application/json",
    )
    .await;
    assert_eq!(session(&app, SESSION).await["activity"]["lines_added"], 8);
    // The same in protobuf, for its own session.
    turn(&app, &key, PROTOBUF_SESSION, None, 1000).await;
    export(
        &app,
        Some(&key),
        PROTOBUF.to_vec(),
        "application/x-protobuf",
    )
    .await;
    assert_eq!(
        session(&app, PROTOBUF_SESSION).await["activity"]["lines_added"],
        4
    );
    assert_eq!(
        app.mock.state.messages(),
        2,
        "telemetry never goes upstream"
    );
}

fn commits(temporality: u64, value: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "claude_code.commit.count",
        "sum": {"aggregationTemporality": temporality, "dataPoints": [{"asInt": value.to_string(),
            "attributes": [{"key": "session.id", "value": {"stringValue": "s-1"}}]}]}}]}]}]}))
    .unwrap()
}

#[tokio::test]
async fn a_cumulative_series_counts_its_last_value_once() {
    let (app, key) = gateway().await;
    turn(&app, &key, "s-1", None, 10).await;
    export(&app, Some(&key), commits(2, 2), "application/json").await;
    export(&app, Some(&key), commits(2, 3), "application/json").await;
    assert_eq!(session(&app, "s-1").await["activity"]["commits"], 3);
}

#[tokio::test]
async fn telemetry_without_one_of_our_credentials_or_unreadable_is_dropped() {
    let (app, key) = gateway().await;
    turn(&app, &key, "s-1", None, 10).await;
    export(&app, None, commits(1, 5), "application/json").await;
    export(
        &app,
        Some("sk-ant-someone-elses"),
        commits(1, 5),
        "application/json",
    )
    .await;
    export(
        &app,
        Some("sk-ab-unknown-key-0000000000000000000000000000"),
        commits(1, 5),
        "application/json",
    )
    .await;
    export(&app, Some(&key), b"{not json".to_vec(), "application/json").await;
    export(
        &app,
        Some(&key),
        vec![0x0a, 0xff, 0x01],
        "application/x-protobuf",
    )
    .await;
    export(
        &app,
        Some(&key),
        vec![0u8; 5 * 1024 * 1024],
        "application/x-protobuf",
    )
    .await;
    assert_eq!(session(&app, "s-1").await["activity"], Value::Null);
    // The same export with the key is kept: the drops above were for what they sent.
    export(&app, Some(&key), commits(1, 5), "application/json").await;
    assert_eq!(session(&app, "s-1").await["activity"]["commits"], 5);
}

#[tokio::test]
async fn a_sessions_spend_is_split_between_its_main_agent_and_each_subagent() {
    let (app, key) = gateway().await;
    turn(&app, &key, "s-1", None, 2000).await;
    turn(&app, &key, "s-1", Some("agent-a"), 1000).await;
    turn(&app, &key, "s-1", Some("agent-a"), 1000).await;
    turn(&app, &key, "s-1", Some("agent-b"), 200).await;
    let s = session(&app, "s-1").await;
    assert_eq!(
        s["agents"],
        json!([
            {"agent_id": null, "agent_type": null, "parent_agent_id": null, "spent_dollars": "0.01", "requests": 1},
            {"agent_id": "agent-a", "agent_type": "general-purpose", "parent_agent_id": "main", "spent_dollars": "0.01", "requests": 2},
            {"agent_id": "agent-b", "agent_type": "general-purpose", "parent_agent_id": "main", "spent_dollars": "0.001", "requests": 1},
        ])
    );
    let parts: Money = s["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| dollars(&a["spent_dollars"]))
        .sum();
    assert_eq!(
        parts,
        dollars(&s["spent_dollars"]),
        "the parts add up to the session"
    );
}

#[tokio::test]
async fn spend_is_shown_per_project_named_by_the_sign_in() {
    let (app, _) = gateway().await;
    let token = signed_in(&app, "dev").await;
    let access = token["access_token"].as_str().unwrap();
    for (project, output) in [("alpha", 1000), ("alpha", 1000), ("beta", 3000), ("", 500)] {
        let mut b = body("claude-haiku-4-5", 10);
        if !project.is_empty() {
            b["tags"] = json!({"project": project});
        }
        let r = reqwest::Client::new()
            .post(app.url("/v1/messages"))
            .bearer_auth(access)
            .header("x-mock", output_of(output).to_string())
            .json(&b)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let projects = app.get("/api/budgets/dev/projects").await["items"].clone();
    let rows: Vec<(String, String, u64, String)> = projects
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["project"].as_str().unwrap().into(),
                p["period_dollars"].as_str().unwrap().into(),
                p["period_requests"].as_u64().unwrap(),
                p["total_dollars"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("beta".into(), "0.015".into(), 1, "0.015".into()),
            ("alpha".into(), "0.01".into(), 2, "0.01".into()),
        ]
    );
    let r = reqwest::Client::new()
        .get(app.url("/api/budgets/nope/projects"))
        .bearer_auth(app.admin_token.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn records_from_before_the_roll_ups_are_rolled_up_on_upgrade() {
    let (app, key) = gateway().await;
    turn(&app, &key, "s-1", None, 2000).await;
    turn(&app, &key, "s-1", Some("agent-a"), 1000).await;
    let before = session(&app, "s-1").await["agents"].clone();
    let (mock, dir) = app.stop().await;
    {
        let c =
            rusqlite::Connection::open(dir.path().join(agent_budget::store::FILE_NAME)).unwrap();
        // As the previous schema (12) left it: the records, no roll-ups of agents or projects.
        c.execute_batch(
            "PRAGMA user_version = 12; DROP TABLE session_agents; DROP TABLE projects; DROP TABLE session_activity;
             ALTER TABLE budgets DROP COLUMN parent_id; ALTER TABLE budgets DROP COLUMN max_session_dollars;
             ALTER TABLE virtual_keys DROP COLUMN max_dollars; ALTER TABLE virtual_keys DROP COLUMN period;
             DROP INDEX usage_key; ALTER TABLE usage DROP COLUMN key_id;
             DROP INDEX virtual_keys_lineage; ALTER TABLE virtual_keys DROP COLUMN lineage;
             DROP TABLE subscriptions; ALTER TABLE budgets DROP COLUMN max_subscription_utilization;",
        )
        .unwrap();
    }
    let app = start_on(mock, dir, |_| {}).await;
    assert_eq!(session(&app, "s-1").await["agents"], before);
}
