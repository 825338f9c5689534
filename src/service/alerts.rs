//! Alert operations: the alert log, the badge, test webhooks, and retention.

use super::Service;
use super::{badge, webhook};
use crate::budget::alert::{AlertKind, NewAlert};
use crate::budget::period;
use crate::error::HttpError;
use crate::events::CoreEvent;
use crate::record::{AlertView, Delivery, DeliveryAttempt, UsageRow, UsageStatus};
use crate::store::alerts as rows;
use crate::store::{self, usage::SWEEP_BATCH};
use chrono::Duration;
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// `POST /api/budgets/:id/test-webhook`: what the receiver said.
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct WebhookTest {
    pub delivered: bool,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The test alert, as it now stands in the alert log.
    pub alert: Option<AlertView>,
}

impl Service {
    /// Tells listeners what a usage record says (under the budget's `name`, known to the
    /// caller, so the hot path looks nothing up), and wakes webhook delivery if it raised
    /// alerts.
    pub fn publish(&self, name: String, row: &UsageRow) {
        if row.status != UsageStatus::Blocked {
            self.count(&name, row);
        }
        if row.status == UsageStatus::Blocked {
            self.events.emit(CoreEvent::RequestBlocked {
                budget_id: row.budget_id,
                budget: name,
            });
        } else {
            self.events.emit(CoreEvent::UsageRecorded {
                budget_id: row.budget_id,
                budget: name,
                status: row.status,
                cost_dollars: row.cost,
            });
        }
        self.announce(&row.alerts);
    }

    /// A forwarded request in the metrics: its outcome, tokens and cost.
    fn count(&self, budget: &str, row: &UsageRow) {
        let t = &row.tokens;
        let tokens = [
            ("input", t.input),
            ("output", t.output),
            ("cache_read", t.cache_read),
            (
                "cache_write",
                t.cache_write_5m.saturating_add(t.cache_write_1h),
            ),
        ];
        let dollars = row.cost.max(crate::money::Money::ZERO).approx_dollars();
        let model = self.prices().label(&row.model);
        (self.metrics).forwarded(budget, row.status.as_str(), model, tokens, dollars);
    }

    /// Whether `alert` is raised here for the first time since the proxy started (an alert
    /// without a once-key never is).
    pub fn first_time(&self, alert: &NewAlert) -> bool {
        alert.once_key().is_some_and(|k| {
            self.raised_once
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(k)
        })
    }

    /// Tells listeners of raised alerts and wakes webhook delivery.
    pub fn announce(&self, alerts: &[NewAlert]) {
        for a in alerts {
            self.events.emit(CoreEvent::AlertRaised {
                budget_id: a.budget_id,
                budget: a.budget.clone(),
                kind: a.kind,
                threshold: a.threshold,
                message: a.message(),
            });
        }
        if !alerts.is_empty() {
            self.alerts_raised.notify_one();
        }
    }

    pub async fn alerts(
        &self,
        limit: Option<u32>,
        budget: Option<&str>,
    ) -> Result<Vec<AlertView>, HttpError> {
        let limit = limit.unwrap_or(50).clamp(1, 500);
        let budget_id = match budget {
            Some(key) => Some(self.slot(key)?.status(period::now()).budget.id),
            None => None,
        };
        let zone = self.config.zone;
        Ok(self
            .store
            .read(move |c| rows::list(c, limit, budget_id, zone))
            .await?)
    }

    pub fn badge(&self, key: &str, style: Option<&str>) -> Result<String, HttpError> {
        let style = badge::Style::parse(style).ok_or_else(|| {
            HttpError::invalid("query parameter 'style' must be 'flat' or 'flat-square'")
        })?;
        Ok(badge::render(&self.slot(key)?.status(period::now()), style))
    }

    /// Sends a `test` alert to the budget's webhook now and records it in the alert log.
    pub async fn test_webhook(&self, key: &str) -> Result<WebhookTest, HttpError> {
        let now = period::now();
        let status = self.slot(key)?.status(now);
        let Some(url) = status.budget.webhook_url.clone() else {
            return Err(HttpError::invalid(format!(
                "budget '{}' has no webhook_url; set one with PATCH /api/budgets/{} first",
                status.budget.name, status.budget.name
            )));
        };
        let alert = status.alert(AlertKind::Test, None, None, now);
        let stored = alert.clone();
        let id = self
            .store
            .writer
            .run(move |tx| {
                rows::insert(tx, &stored, now)?;
                Ok(tx.last_insert_rowid())
            })
            .await?;
        let payload = webhook::payload(
            self,
            id,
            status.budget.period.as_str(),
            status.window.start,
            status.window.resets_at,
            status.budget.id,
        )
        .await
        .unwrap_or_default();
        let text = format!("{} — {}", alert.message(), self.dashboard_url());
        let body = webhook::body_for(&url, &payload, &text);
        let attempt: DeliveryAttempt = webhook::post(
            &self.client,
            &url,
            body,
            &self.webhook_secret,
            now,
            self.config.zone,
        )
        .await;
        let delivered = attempt.error.is_none();
        let result = WebhookTest {
            delivered,
            status: attempt.status,
            error: attempt.error.clone(),
            alert: None,
        };
        let (delivery, json) = (
            if delivered {
                Delivery::Delivered
            } else {
                Delivery::Failed
            },
            payload.to_string(),
        );
        self.store
            .writer
            .run(move |tx| rows::attempted(tx, id, &[attempt], delivery, None, &json))
            .await?;
        let zone = self.config.zone;
        let view = self.store.read(move |c| rows::get(c, id, zone)).await?;
        Ok(WebhookTest {
            alert: view,
            ..result
        })
    }

    /// Deletes usage records older than the retention period, in short transactions.
    /// Budget totals live in the daily roll-ups and do not change. Returns how many went.
    pub async fn sweep_retention(&self) -> Result<usize, HttpError> {
        let cutoff = period::now() - Duration::days(i64::from(self.config.retention_days));
        let mut total = 0;
        loop {
            let n = self
                .store
                .writer
                .run(move |tx| store::usage::sweep(tx, cutoff))
                .await?;
            total += n;
            if (n as i64) < SWEEP_BATCH {
                break;
            }
        }
        if let Some(team) = &self.team {
            // The team's records follow the same retention; a failure is retried next hour.
            if let Err(e) = team.sweep(cutoff.timestamp_millis()).await {
                tracing::warn!("the team's old records were not swept: {e}");
            }
        }
        Ok(total)
    }
}
