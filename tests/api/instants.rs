//! One rendering of each instant: every timestamp the product emits has milliseconds and an
//! offset, and instants that are equal by definition are the same string everywhere.

use crate::helpers::*;
use crate::receiver::{self, Mode};
use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Value, json};

/// RFC 3339 with exactly three fractional digits and a numeric offset, as docs/DECISIONS.md says.
fn instant(v: &Value) -> DateTime<FixedOffset> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a timestamp string: {v}"));
    let t = DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    let (_, rest) = s
        .split_once('.')
        .unwrap_or_else(|| panic!("{s} has no milliseconds"));
    assert!(
        rest.len() == 9 && rest[..3].bytes().all(|b| b.is_ascii_digit()) && !rest.ends_with('Z'),
        "{s}: want exactly milliseconds and a +hh:mm offset"
    );
    t
}

/// A Haiku 4.5 response costing `output / 200000` dollars.
fn spending(output: u64) -> Value {
    json!({"usage": {"input_tokens": 0, "output_tokens": output}})
}

#[tokio::test]
async fn a_total_budgets_period_starts_at_its_creation_in_every_rendering() {
    let hook = receiver::start(Mode::Ok).await;
    let app = spawn_app().await;
    let made = app
        .create_budget(json!({"name": "whole", "max_dollars": "1", "webhook_url": hook.url()}))
        .await;
    let created = made["created_at"].clone();
    instant(&created);
    assert_eq!(made["period_start"], created, "the API's own period_start");

    let r = app
        .send(
            Some("whole"),
            &body("claude-haiku-4-5", 10),
            Some(spending(120_000)),
        )
        .await;
    assert_eq!(r.status(), 200);
    app.eventually("the 50 % alert is delivered", || async {
        hook.count() == 1
    })
    .await;
    let payload: Value = serde_json::from_slice(&hook.all()[0].body).unwrap();
    assert_eq!(
        payload["period_start"], created,
        "the webhook's period_start"
    );
    assert_eq!(payload["resets_at"], Value::Null);

    let logged = app.get("/api/alerts?budget=whole").await["items"][0].clone();
    assert_eq!(
        payload["created_at"], logged["created_at"],
        "the alert in the payload and the log"
    );
    let alert_at = instant(&logged["created_at"]);
    app.eventually("the log shows the attempt", || async {
        app.get("/api/alerts?budget=whole").await["items"][0]["deliveries"]
            .as_array()
            .is_some_and(|d| d.len() == 1)
    })
    .await;
    let logged = app.get("/api/alerts?budget=whole").await["items"][0].clone();
    assert!(
        instant(&logged["deliveries"][0]["at"]) >= alert_at,
        "delivered after it was raised"
    );

    let record = app.usage("whole").await[0].clone();
    let csv = app.get_text("/api/budgets/whole/usage.csv").await;
    let csv_at = csv.lines().nth(1).unwrap().split(',').nth(1).unwrap();
    assert_eq!(record["created_at"], csv_at, "a record in JSON and in CSV");
    instant(&record["created_at"]);

    // Read back from the database after a restart: the same strings.
    let (mock, dir) = app.stop().await;
    let again = start_on(mock, dir, |_| {}).await;
    let reread = again.budget("whole").await;
    assert_eq!(reread["created_at"], created, "created_at after a restart");
    assert_eq!(reread["period_start"], created);
    assert_eq!(
        again.usage("whole").await[0]["created_at"],
        record["created_at"]
    );
}

#[tokio::test]
async fn a_daily_budgets_reset_is_one_instant_in_the_api_the_refusal_and_the_payload() {
    let hook = receiver::start(Mode::Ok).await;
    let app = spawn_app().await;
    app.create_budget(
        json!({"name": "day", "max_dollars": "1", "period": "daily", "thresholds": [100], "webhook_url": hook.url()}),
    )
    .await;
    let b = app.budget("day").await;
    let (start, resets) = (instant(&b["period_start"]), instant(&b["resets_at"]));
    // Europe/Berlin: local midnight to local midnight.
    assert_eq!(start.format("%H:%M:%S%.3f").to_string(), "00:00:00.000");
    assert_eq!(resets.format("%H:%M:%S%.3f").to_string(), "00:00:00.000");
    assert!(resets > start && resets.signed_duration_since(start).num_hours() >= 23);

    let r = app
        .send(
            Some("day"),
            &body("claude-haiku-4-5", 10),
            Some(spending(200_000)),
        )
        .await;
    assert_eq!(r.status(), 200);
    let before = Utc::now();
    let refused = app
        .send(Some("day"), &body("claude-haiku-4-5", 10), None)
        .await;
    let after = Utc::now();
    assert_eq!(refused.status(), 429);
    let retry: i64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let message = refused.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    let resets_str = b["resets_at"].as_str().unwrap();
    assert!(
        message.ends_with(&format!("resets {resets_str}")),
        "{message} names the budget's resets_at"
    );
    // retry-after is the seconds from the refusal to resets_at, rounded up.
    let (earliest, latest) = (
        resets.signed_duration_since(after).num_milliseconds(),
        resets.signed_duration_since(before).num_milliseconds(),
    );
    assert!(
        retry * 1000 >= earliest && (retry - 1) * 1000 < latest,
        "retry-after {retry} s against {earliest}..{latest} ms to the reset"
    );

    app.eventually("the 100 % and blocked alerts are delivered", || async {
        hook.count() == 2
    })
    .await;
    for d in hook.all() {
        let payload: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(
            payload["period_start"], b["period_start"],
            "{}",
            payload["kind"]
        );
        assert_eq!(payload["resets_at"], b["resets_at"], "{}", payload["kind"]);
        instant(&payload["created_at"]);
    }
}
