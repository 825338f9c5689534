//! A window's alert: the log, the dashboard and the desktop, and the subscription webhook if
//! one is set — raised by one proxy only on a team (the one whose claim the database takes).

use super::Crossed;
use crate::events::CoreEvent;
use crate::service::{Service, webhook};

/// The webhook deliveries of a window alert: now, then after 5 s and 30 s.
const WEBHOOK_PAUSES: [u64; 3] = [0, 5, 30];

/// What raising one alert takes, owned, so that it can wait for the team's claim.
struct Raise {
    account: String,
    crossed: Crossed,
    message: String,
    events: crate::events::Events,
    /// The webhook's address and body, if one is set.
    hook: Option<(String, Vec<u8>)>,
    client: reqwest::Client,
    secret: String,
    zone: crate::budget::period::Zone,
    stop: tokio_util::sync::CancellationToken,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    tracker: tokio_util::task::TaskTracker,
}

impl Service {
    /// Raises the alert of a window's threshold newly crossed: at once on one proxy; on a team
    /// once the database gives this proxy the claim.
    pub(super) fn raise_window_alert(&self, account: &str, c: &Crossed) {
        let raise = self.raise(account, c);
        let Some(team) = self.team.clone() else {
            raise.announce();
            return;
        };
        self.tracker.spawn(async move {
            let c = &raise.crossed;
            let reset = c.resets_at.unwrap_or(0);
            let claim = team.claim_window_alert(&raise.account, c.window, reset, c.threshold);
            match claim.await {
                Ok(false) => return,
                Ok(true) => {}
                // Raised twice rather than not at all.
                Err(e) => tracing::warn!("a window alert is raised without the team's claim: {e}"),
            }
            raise.announce();
        });
    }

    fn raise(&self, account: &str, c: &Crossed) -> Raise {
        let resets = c
            .resets_at
            .map(|r| format!(", resets {}", self.render_secs(r)))
            .unwrap_or_default();
        let message = format!(
            "Subscription {account}: the {} window is at {:.0} % (alert at {} %){resets}",
            c.window,
            c.utilization * 100.0,
            c.threshold
        );
        let hook = self.config.subscription_webhook.clone().map(|url| {
            let payload = serde_json::json!({
                "type": "subscription_window",
                "account": account,
                "window": c.window,
                "threshold": c.threshold,
                "utilization": c.utilization,
                "resets_at": c.resets_at.map(|r| self.render_secs(r)),
                "message": message,
            });
            let body = webhook::body_for(&url, &payload, &message);
            (url, body)
        });
        Raise {
            account: account.to_string(),
            crossed: c.clone(),
            message,
            events: self.events.clone(),
            hook,
            client: self.client.clone(),
            secret: self.webhook_secret.clone(),
            zone: self.config.zone,
            stop: self.abort.clone(),
            metrics: self.metrics.clone(),
            tracker: self.tracker.clone(),
        }
    }
}

impl Raise {
    /// Tells the log, the dashboard and the desktop, and sends the webhook.
    fn announce(self) {
        let c = &self.crossed;
        let message = &self.message;
        tracing::warn!(
            account = self.account,
            window = c.window,
            threshold = c.threshold,
            "{message}"
        );
        self.events.emit(CoreEvent::WindowAlert {
            account: self.account.clone(),
            window: c.window.to_string(),
            threshold: c.threshold,
            message: message.clone(),
        });
        let Some((url, body)) = self.hook else { return };
        let (client, secret, zone, stop, metrics) =
            (self.client, self.secret, self.zone, self.stop, self.metrics);
        self.tracker.spawn(async move {
            for pause in WEBHOOK_PAUSES {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(pause)) => {}
                }
                let now = chrono::Utc::now();
                let attempt = webhook::post(&client, &url, body.clone(), &secret, now, zone).await;
                metrics.webhook(attempt.error.is_none());
                if attempt.error.is_none() {
                    return;
                }
                tracing::warn!(error = ?attempt.error, "a subscription window alert's webhook failed");
            }
        });
    }
}
