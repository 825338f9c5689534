//! What the money bought: Claude Code's telemetry kept per session, and spend per project.

use super::Service;
use crate::budget::period;
use crate::dto::Items;
use crate::error::HttpError;
use crate::otlp;
use crate::record::ProjectSpend;
use crate::store;
use axum::http::HeaderMap;

impl Service {
    /// Keeps an OTLP metrics export's per-session counters, if it came with one of this
    /// proxy's credentials (a sign-in's token or a virtual key): the sessions are that
    /// budget's. Anything else is dropped; the exporter is answered the same either way.
    pub async fn keep_activity(&self, headers: &HeaderMap, body: &[u8], is_json: bool) {
        let Ok(budget) = self.key_budget(headers) else {
            return;
        };
        let points = match otlp::metrics(body, is_json) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "an OTLP metrics export was not read");
                return;
            }
        };
        if points.is_empty() {
            return;
        }
        let at = period::now().timestamp_millis();
        let saved = self
            .store
            .writer
            .run(move |tx| store::activity::save(tx, budget, &points, at))
            .await;
        if let Err(e) = saved {
            tracing::warn!(error = %e, "telemetry counters were not saved");
        }
    }

    /// A budget's projects: spend in its current period and since the first request.
    pub async fn projects(&self, key: &str) -> Result<Items<ProjectSpend>, HttpError> {
        let now = period::now();
        let status = self.slot(key)?.status(now);
        let zone = self.config.zone;
        let id = status.budget.id;
        let since = zone.day(status.window.start);
        let items = self
            .store
            .read(move |c| store::projects::list(c, id, since, zone))
            .await?;
        Ok(Items { items })
    }
}
