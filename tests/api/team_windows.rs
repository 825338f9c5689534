//! Subscription windows on a team (docs/team.md): what one proxy's answers said of a
//! subscription's windows holds on every proxy, and each window alert is raised by one.

use crate::helpers::*;
use crate::receiver::{self, Mode};
use crate::subscriptions::{as_subscriber, five_hour};
use agent_budget::config::Secret;
use mock_upstream::postgres::Postgres;
use serde_json::json;

async fn member(pg: &Postgres, webhook: Option<String>) -> TestApp {
    let url = pg.url("postgres");
    spawn_with(|s| {
        s.database = Some(url);
        s.upstream_key = Some(Secret::new("sk-ant-team-real-key".into()));
        s.subscription_webhook = webhook;
    })
    .await
}

#[tokio::test]
async fn a_window_seen_through_one_proxy_stops_a_budgets_requests_on_another() {
    let pg = Postgres::start();
    let (a, b) = (member(&pg, None).await, member(&pg, None).await);
    a.create_budget(json!({
        "name": "agents", "max_dollars": "100",
        "max_subscription_utilization": {"five_hour": 0.8}
    }))
    .await;
    b.follows_budget("agents").await;
    let r = as_subscriber(&a, Some("agents"), five_hour("0.85")).await;
    assert_eq!(r.status(), 200);
    // B never forwarded this subscription's requests; it has A's answer all the same.
    b.eventually("the window on the other proxy", || async {
        b.get("/api/subscriptions").await["items"][0]["five_hour"]["utilization"] == 0.85
    })
    .await;
    let sent = b.mock.state.messages();
    let r = as_subscriber(&b, Some("agents"), five_hour("0.5")).await;
    let msg = refusal(r, 429).await;
    assert!(
        msg.contains("stops at 80 % of the subscription's 5-hour window"),
        "{msg}"
    );
    assert_eq!(b.mock.state.messages(), sent, "refused before it was sent");
}

#[tokio::test]
async fn a_window_alert_is_raised_by_one_proxy_of_the_team() {
    let pg = Postgres::start();
    let hook = receiver::start(Mode::Ok).await;
    let a = member(&pg, Some(hook.url())).await;
    let b = member(&pg, Some(hook.url())).await;
    // Both see the 5-hour window cross 80 %, each for the first time.
    assert_eq!(
        as_subscriber(&a, None, five_hour("0.81")).await.status(),
        200
    );
    assert_eq!(
        as_subscriber(&b, None, five_hour("0.82")).await.status(),
        200
    );
    // Stopped, each has sent what it was to send (its alerts' first deliveries included).
    a.stop().await;
    b.stop().await;
    let got: Vec<serde_json::Value> = (hook.all().iter())
        .map(|d| serde_json::from_slice(&d.body).unwrap())
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0]["window"].as_str(), got[0]["threshold"].as_u64()),
        (Some("5-hour"), Some(80))
    );
}
