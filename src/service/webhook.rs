//! Webhook delivery from the durable outbox (the `alerts` table): signed with the install's
//! secret, retried with backoff for 24 hours, every attempt recorded. Runs in its own task,
//! never on the proxy's path.

use crate::budget::period::{self, Zone};
use crate::record::{Delivery, DeliveryAttempt};
use crate::service::Service;
use crate::store::alerts::{self as rows, Due};
use chrono::{DateTime, Duration as Span, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SECRET_FILE: &str = "webhook-secret";
pub const SIGNATURE_HEADER: &str = "x-agent-budget-signature";
const TIMEOUT: Duration = Duration::from_secs(10);
/// After the first attempt: about 5 s, 30 s, 2 min, 10 min, then hourly, for 24 hours.
const BACKOFF: [i64; 4] = [5, 30, 120, 600];
const GIVE_UP_AFTER_HOURS: i64 = 24;
const POLL: Duration = Duration::from_secs(1);

fn valid_secret(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The per-install signing secret: 64 lowercase hex characters in `<data-dir>/webhook-secret`,
/// created on first start with mode 0600.
pub fn load_or_create_secret(dir: &Path) -> std::io::Result<String> {
    crate::secret_file::load_or_create(&dir.join(SECRET_FILE), valid_secret)
}

/// `sha256=<lowercase hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(), // HMAC takes keys of any length; unreachable
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// When to try again after `made` attempts, or None to give up.
pub fn next_attempt(
    created: DateTime<Utc>,
    made: usize,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let wait = BACKOFF.get(made.saturating_sub(1)).copied().unwrap_or(3600);
    let next = now + Span::seconds(wait);
    (next <= created + Span::hours(GIVE_UP_AFTER_HOURS)).then_some(next)
}

/// The request body for a receiver: Slack and Discord get a message they render; everyone
/// else the JSON payload.
pub fn body_for(url: &str, payload: &Value, text: &str) -> Vec<u8> {
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let v = if host == "hooks.slack.com" {
        json!({ "text": text })
    } else if (host == "discord.com" || host == "discordapp.com") && url.contains("/api/webhooks/")
    {
        json!({ "content": text })
    } else {
        return serde_json::to_vec(payload).unwrap_or_default();
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// One-line text for chat receivers: the message plus a link to the dashboard.
fn chat_text(payload: &Value, dashboard: &str) -> String {
    let msg = payload["message"].as_str().unwrap_or("agent-budget alert");
    format!("{msg} — {dashboard}")
}

/// POSTs a signed body; the attempt says what the receiver answered.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    secret: &str,
    now: DateTime<Utc>,
    zone: Zone,
) -> DeliveryAttempt {
    let sig = signature(secret, &body);
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("agent-budget/", env!("CARGO_PKG_VERSION")),
        )
        .header(SIGNATURE_HEADER, sig)
        .timeout(TIMEOUT)
        .body(body)
        .send()
        .await;
    let at = zone.render(now);
    match sent {
        Ok(r) if r.status().is_success() => DeliveryAttempt {
            at,
            status: Some(r.status().as_u16()),
            error: None,
        },
        Ok(r) => DeliveryAttempt {
            at,
            status: Some(r.status().as_u16()),
            error: Some(format!("the receiver answered {}", r.status())),
        },
        Err(e) if e.is_timeout() => DeliveryAttempt {
            at,
            status: None,
            error: Some(format!("no answer within {} s", TIMEOUT.as_secs())),
        },
        Err(e) => {
            let mut cause = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                cause = s.to_string();
                src = s.source();
            }
            DeliveryAttempt {
                at,
                status: None,
                error: Some(cause),
            }
        }
    }
}

/// The JSON payload of an alert: the alert plus its period and the per-model breakdown.
pub async fn payload(
    app: &Service,
    alert_id: i64,
    period: &str,
    start: DateTime<Utc>,
    resets: Option<DateTime<Utc>>,
    budget_id: i64,
) -> Option<Value> {
    let zone = app.config.zone;
    let view = app
        .store
        .read(move |c| rows::get(c, alert_id, zone))
        .await
        .ok()??;
    let since = zone.day(start);
    let breakdown = app
        .store
        .read(move |c| crate::store::budgets::breakdown(c, budget_id, since))
        .await
        .ok()?;
    let mut v = serde_json::to_value(&view).ok()?;
    let o = v.as_object_mut()?;
    o.remove("delivery");
    o.remove("deliveries");
    o.insert("period".into(), json!(period));
    o.insert("period_start".into(), json!(zone.render(start)));
    o.insert("resets_at".into(), json!(resets.map(|r| zone.render(r))));
    o.insert("breakdown".into(), serde_json::to_value(breakdown).ok()?);
    Some(v)
}

/// One signed POST of an alert's payload (as the receiver's kind wants it), and when it was.
async fn attempt(app: &Service, url: &str, payload: &str) -> (DeliveryAttempt, DateTime<Utc>) {
    let value: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
    let body = body_for(url, &value, &chat_text(&value, &app.dashboard_url()));
    let now = period::now();
    let made = post(
        &app.client,
        url,
        body,
        &app.webhook_secret,
        now,
        app.config.zone,
    )
    .await;
    app.metrics.webhook(made.error.is_none());
    (made, now)
}

async fn deliver(app: &Service, due: Due) {
    let text = match due.payload.clone() {
        Some(p) => p,
        None => match payload(
            app,
            due.id,
            &due.period,
            due.period_start,
            due.resets_at,
            due.budget_id,
        )
        .await
        {
            Some(v) => v.to_string(),
            None => return,
        },
    };
    let (attempt, now) = attempt(app, &due.webhook_url, &text).await;
    let ok = attempt.error.is_none();
    let mut attempts = due.attempts;
    attempts.push(attempt);
    let next = if ok {
        None
    } else {
        next_attempt(due.created_at, attempts.len(), now)
    };
    let delivery = match (ok, next) {
        (true, _) => Delivery::Delivered,
        (false, Some(_)) => Delivery::Pending,
        (false, None) => Delivery::Failed,
    };
    let id = due.id;
    if let Some(error) = attempts.last().and_then(|a| a.error.as_deref()) {
        // The URL stays out of the log: chat webhooks carry their token in it.
        tracing::warn!(alert = id, attempt = attempts.len(), %error, retry = next.is_some(), "webhook delivery failed");
    }
    let stored = app
        .store
        .writer
        .run(move |tx| rows::attempted(tx, id, &attempts, delivery, next, &text))
        .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, alert = id, "could not record a webhook attempt");
    }
}

/// Delivers what is due in the team's outbox (deliveries any of its proxies may make, each
/// taken for a lease so only one makes it).
async fn deliver_team(app: &Service, team: &crate::team::Team) {
    let due = match team.due().await {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!("the team's webhook outbox cannot be read: {e}");
            return;
        }
    };
    for q in due {
        let (attempt, now) = attempt(app, &q.webhook_url, &q.payload).await;
        let made = q.attempts as usize + 1;
        let next = match &attempt.error {
            None => None,
            Some(error) => {
                tracing::warn!(claim = %q.claim, attempt = made, %error, "team webhook delivery failed");
                next_attempt(period::from_millis(q.created_at), made, now)
            }
        };
        let recorded = team
            .attempted(&q.claim, next.map(|n| n.timestamp_millis()))
            .await;
        if let Err(e) = recorded {
            tracing::warn!(claim = %q.claim, "a team webhook attempt is not recorded: {e}");
        }
    }
}

/// The delivery loop: wakes when alerts are raised, or when the next retry is due.
pub async fn run(app: Arc<Service>, stop: CancellationToken) {
    loop {
        let now = period::now();
        match app.store.read(move |c| rows::due(c, now)).await {
            Ok(due) => {
                for d in due {
                    // Each attempt is bounded by the timeout; a hanging receiver delays only this loop.
                    deliver(&app, d).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "could not read the webhook outbox"),
        }
        if let Some(team) = &app.team {
            deliver_team(&app, team).await;
        }
        // The raise notification can arrive before its alert's commit, so never sleep long:
        // at most a second, less when a retry is due sooner.
        let next = app.store.read(rows::next_due).await.ok().flatten();
        let wait = next
            .map(|n| (n - period::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(POLL)
            .min(POLL);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = app.alerts_raised.notified() => {}
            _ = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_in_lowercase_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn retries_back_off_then_go_hourly_and_stop_after_a_day() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-28T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let after =
            |made, now: DateTime<Utc>| next_attempt(t0, made, now).map(|n| (n - now).num_seconds());
        assert_eq!(after(1, t0), Some(5));
        assert_eq!(after(2, t0), Some(30));
        assert_eq!(after(3, t0), Some(120));
        assert_eq!(after(4, t0), Some(600));
        assert_eq!(after(5, t0), Some(3600));
        assert_eq!(after(20, t0 + Span::hours(22)), Some(3600));
        assert_eq!(after(21, t0 + Span::hours(23) + Span::minutes(30)), None);
    }

    #[test]
    fn chat_services_get_a_message_others_the_payload() {
        let p = json!({"message": "Budget 'a' reached 50%", "kind": "threshold"});
        let slack: Value = serde_json::from_slice(&body_for(
            "https://hooks.slack.com/services/T/B/x",
            &p,
            "hi",
        ))
        .unwrap();
        assert_eq!(slack, json!({"text": "hi"}));
        let discord: Value = serde_json::from_slice(&body_for(
            "https://discord.com/api/webhooks/1/abc",
            &p,
            "hi",
        ))
        .unwrap();
        assert_eq!(discord, json!({"content": "hi"}));
        let other: Value =
            serde_json::from_slice(&body_for("https://example.test/hook", &p, "hi")).unwrap();
        assert_eq!(other, p);
    }

    #[test]
    fn the_secret_is_created_once_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let s = load_or_create_secret(dir.path()).unwrap();
        assert!(valid_secret(&s));
        assert_eq!(load_or_create_secret(dir.path()).unwrap(), s);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
