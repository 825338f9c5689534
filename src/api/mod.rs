//! The REST API under `/agent-budget/api`: thin handlers that parse input, call the service
//! layer and serialise its result.

pub mod assets;
pub mod live;
pub mod oauth;
pub mod session;

use crate::budget::{BudgetPatch, NewBudget};
use crate::dto::{
    BudgetDetail, BudgetView, Items, KeyCreated, KeyPatch, NewKey, NewUpstreamKey, RateLimitView,
    SessionPage, Settings, SubscriptionView, UpstreamKeyView, UsagePage,
};
use crate::error::HttpError;
use crate::pricing::{PriceEntry, PricingTable};
use crate::record::AlertView;
use crate::record::KeyView;
use crate::record::ProjectSpend;
use crate::record::stats::{SpendSeries, Stats};
use crate::service::Service;
use crate::service::alerts::WebhookTest;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::de::DeserializeOwned;
use std::sync::Arc;

type App = State<Arc<Service>>;

/// The REST API's routes (under `/agent-budget/api`), sign-in, health and the dashboard.
pub fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/api/hello", get(hello).head(hello))
        .route("/agent-budget/health", get(health))
        .route(
            "/agent-budget/api/budgets",
            get(list_budgets).post(create_budget),
        )
        .route(
            "/agent-budget/api/budgets/{id}",
            get(get_budget).patch(patch_budget).delete(delete_budget),
        )
        .route("/agent-budget/api/budgets/{id}/usage", get(usage))
        .route("/agent-budget/api/budgets/{id}/sessions", get(sessions))
        .route("/agent-budget/api/budgets/{id}/projects", get(projects))
        .route(
            "/agent-budget/api/budgets/{id}/keys",
            get(list_keys).post(create_key),
        )
        .route(
            "/agent-budget/api/budgets/{id}/keys/{key_id}",
            delete(revoke_key).patch(patch_key),
        )
        .route("/agent-budget/api/budgets/{id}/badge", get(badge))
        .route(
            "/agent-budget/api/budgets/{id}/test-webhook",
            post(test_webhook),
        )
        .route("/agent-budget/api/alerts", get(alerts))
        .route("/agent-budget/metrics", get(metrics))
        .route("/agent-budget/api/subscriptions", get(subscriptions))
        .route("/agent-budget/api/rate-limits", get(rate_limits))
        .route("/agent-budget/api/events", get(live::events))
        .route(
            "/agent-budget/api/budgets/{id}/usage.csv",
            get(live::usage_csv),
        )
        .route(
            "/agent-budget/api/pricing",
            get(get_pricing).put(put_pricing),
        )
        .route("/agent-budget/api/stats", get(stats))
        .route(
            "/agent-budget/sign-in",
            get(session::redeem).post(session::with_token),
        )
        .route(
            "/agent-budget/api/sign-in-links",
            post(session::create_link),
        )
        .route("/agent-budget/api/sign-out", post(session::sign_out))
        .route("/agent-budget/api/spend", get(spend))
        .route("/agent-budget/api/settings", get(settings))
        .route(
            "/agent-budget/api/settings/upstream-key",
            get(upstream_key)
                .put(set_upstream_key)
                .delete(delete_upstream_key),
        )
        .merge(oauth::routes())
        .route("/agent-budget", get(assets::root))
        .route("/agent-budget/", get(assets::index))
        .route("/agent-budget/{*path}", get(assets::file))
}

/// Parses a JSON object body; errors name the offending field (`field 'max_dollars': …`).
/// Anything but an object is refused (serde would otherwise take an array's items as the
/// fields in order), and so is a fractional number longer than a JSON number carries exactly.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, HttpError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(HttpError::invalid(
            "the request body must be a JSON object ({\"field\": value, …}) with the fields this endpoint documents",
        ));
    }
    if let Some(n) = inexact_number(body) {
        return Err(HttpError::invalid(format!(
            "the number {n} has more significant digits than a JSON number carries exactly (15); send amounts of money as decimal strings, e.g. \"{n}\""
        )));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            HttpError::invalid(format!("invalid JSON body: {inner}"))
        } else {
            HttpError::invalid(format!("field '{path}': {inner}"))
        }
    })
}

/// The first fractional number literal (with `.` or an exponent) of a JSON text with more
/// than 15 significant digits: parsed as a binary float, it would be rounded.
fn inexact_number(body: &[u8]) -> Option<String> {
    let (mut i, mut in_string, mut escaped) = (0, false, false);
    while i < body.len() {
        let c = body[i];
        if in_string {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if c == b'-' || c.is_ascii_digit() {
            let end = body[i..]
                .iter()
                .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                .map_or(body.len(), |p| i + p);
            let literal = &body[i..end];
            let mantissa = literal
                .split(|b| matches!(b, b'e' | b'E'))
                .next()
                .unwrap_or(literal);
            let fractional = literal.len() != mantissa.len() || mantissa.contains(&b'.');
            let significant = mantissa
                .iter()
                .filter(|b| b.is_ascii_digit())
                .skip_while(|b| **b == b'0')
                .count();
            if fractional && significant > 15 {
                return Some(String::from_utf8_lossy(literal).into_owned());
            }
            i = end;
            continue;
        }
        i += 1;
    }
    None
}

/// `GET /api/oauth/usage` (Claude Code's gateway protocol): the standing of the budget the
/// request's virtual key is for, in cents and percents; never cached.
pub async fn oauth_usage(State(app): App, headers: HeaderMap) -> Result<Response, HttpError> {
    let body = app.oauth_usage(&headers).await?;
    Ok(([("cache-control", "no-store")], Json(body)).into_response())
}

/// `GET /managed/settings`: this gateway pushes no Claude Code policy. 404 is the protocol's
/// clean "none", which the client does not retry.
pub async fn no_managed_settings() -> HttpError {
    HttpError::not_found("agent-budget: no managed settings for Claude Code here")
}

/// `GET /health`: 200 `{"ok":true}`, or 503 with the reason while usage cannot be saved.
pub async fn health(State(app): App) -> Response {
    match app.failure() {
        None => Json(serde_json::json!({ "ok": true })).into_response(),
        Some(f) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ok": false, "database": f })),
        )
            .into_response(),
    }
}

pub async fn list_budgets(State(app): App) -> Json<Items<BudgetView>> {
    Json(Items {
        items: app.list_budgets(),
    })
}

pub async fn create_budget(
    State(app): App,
    body: Bytes,
) -> Result<(StatusCode, Json<BudgetView>), HttpError> {
    let input: NewBudget = parse(&body)?;
    Ok((StatusCode::CREATED, Json(app.create_budget(input).await?)))
}

pub async fn get_budget(
    State(app): App,
    Path(id): Path<String>,
) -> Result<Json<BudgetDetail>, HttpError> {
    Ok(Json(app.budget_detail(&id).await?))
}

pub async fn patch_budget(
    State(app): App,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<BudgetView>, HttpError> {
    let patch: BudgetPatch = parse(&body)?;
    Ok(Json(app.patch_budget(&id, patch).await?))
}

pub async fn delete_budget(
    State(app): App,
    Path(id): Path<String>,
) -> Result<StatusCode, HttpError> {
    app.delete_budget(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn create_key(
    State(app): App,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<KeyCreated>), HttpError> {
    let input: NewKey = parse(&body)?;
    Ok((StatusCode::CREATED, Json(app.create_key(&id, input).await?)))
}

pub async fn list_keys(
    State(app): App,
    Path(id): Path<String>,
) -> Result<Json<Items<KeyView>>, HttpError> {
    Ok(Json(app.list_keys(&id).await?))
}

pub async fn patch_key(
    State(app): App,
    Path((id, key_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<KeyView>, HttpError> {
    let patch: KeyPatch = parse(&body)?;
    Ok(Json(app.patch_key(&id, &key_id, patch).await?))
}

pub async fn revoke_key(
    State(app): App,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, HttpError> {
    app.revoke_key(&id, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reads `name=<whole number>` from a query string; absent is None, malformed is an error.
fn query_number<T: std::str::FromStr>(
    query: &Option<String>,
    name: &str,
) -> Result<Option<T>, HttpError> {
    let Some(q) = query else { return Ok(None) };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return v.parse().map(Some).map_err(|_| {
                HttpError::invalid(format!(
                    "query parameter '{name}' must be a whole number ≥ 0 (got '{v}')"
                ))
            });
        }
    }
    Ok(None)
}

pub async fn usage(
    State(app): App,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<UsagePage>, HttpError> {
    let limit = query_number::<u64>(&q, "limit")?.map(|l| l.min(u64::from(u32::MAX)) as u32);
    let offset = query_number::<u64>(&q, "offset")?;
    Ok(Json(app.usage_page(&id, limit, offset).await?))
}

/// `GET /api/budgets/:id/projects`: spend per project (Claude Code's `attributionProject`).
pub async fn projects(
    State(app): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Result<Json<Items<ProjectSpend>>, HttpError> {
    Ok(Json(app.projects(&id).await?))
}

pub async fn sessions(
    State(app): App,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<SessionPage>, HttpError> {
    let limit = query_number::<u64>(&q, "limit")?.map(|l| l.min(u64::from(u32::MAX)) as u32);
    let offset = query_number::<u64>(&q, "offset")?;
    Ok(Json(app.sessions_page(&id, limit, offset).await?))
}

pub async fn get_pricing(State(app): App) -> Json<PricingTable> {
    Json(app.pricing_table())
}

pub async fn put_pricing(State(app): App, body: Bytes) -> Result<Json<PriceEntry>, HttpError> {
    let entry: PriceEntry = parse(&body)?;
    Ok(Json(app.put_price(entry).await?))
}

pub async fn stats(State(app): App) -> Result<Json<Stats>, HttpError> {
    Ok(Json(app.stats().await?))
}

pub async fn settings(
    State(app): App,
    axum::extract::Extension(port): axum::extract::Extension<LocalPort>,
) -> Json<Settings> {
    Json(app.settings(port.0))
}

pub async fn upstream_key(State(app): App) -> Json<UpstreamKeyView> {
    Json(app.upstream_key())
}

pub async fn set_upstream_key(
    State(app): App,
    body: Bytes,
) -> Result<Json<UpstreamKeyView>, HttpError> {
    let input: NewUpstreamKey = parse(&body)?;
    Ok(Json(app.set_upstream_key(input).await?))
}

pub async fn delete_upstream_key(State(app): App) -> Result<StatusCode, HttpError> {
    app.delete_upstream_key().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The port the server actually listens on (differs from the config when it asked for 0).
#[derive(Clone, Copy, Debug)]
pub struct LocalPort(pub u16);

/// Claude Code's warm-up probe (`HEAD /api/hello`).
pub async fn hello() -> StatusCode {
    StatusCode::OK
}

/// Reads `name=<text>` from a query string (no percent-decoding needed for names and styles).
fn query_text<'a>(query: &'a Option<String>, name: &str) -> Option<&'a str> {
    query
        .as_deref()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

pub async fn alerts(
    State(app): App,
    RawQuery(q): RawQuery,
) -> Result<Json<Items<AlertView>>, HttpError> {
    let limit = query_number::<u64>(&q, "limit")?.map(|l| l.min(u64::from(u32::MAX)) as u32);
    Ok(Json(Items {
        items: app.alerts(limit, query_text(&q, "budget")).await?,
    }))
}

/// The Prometheus metrics (docs/metrics.md): OpenMetrics when the scraper takes it (as
/// Prometheus does), else the classic text format, which reads the same lines.
pub async fn metrics(State(app): App, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let open = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let kind = match open {
        true => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        false => "text/plain; version=0.0.4; charset=utf-8",
    };
    ([(axum::http::header::CONTENT_TYPE, kind)], app.scrape())
}

/// Each subscription's windows as the upstream last reported them (docs/subscriptions.md).
pub async fn subscriptions(State(app): App) -> Json<Items<SubscriptionView>> {
    Json(Items {
        items: app.subscriptions(),
    })
}

/// Each API key's rate limits as the upstream last reported them.
pub async fn rate_limits(State(app): App) -> Json<Items<RateLimitView>> {
    Json(Items {
        items: app.rate_limits(),
    })
}

pub async fn badge(
    State(app): App,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<impl IntoResponse, HttpError> {
    let svg = app.badge(&id, query_text(&q, "style"))?;
    Ok((
        [
            ("content-type", "image/svg+xml; charset=utf-8"),
            ("cache-control", "no-cache, max-age=0"),
        ],
        svg,
    ))
}

pub async fn test_webhook(
    State(app): App,
    Path(id): Path<String>,
) -> Result<Json<WebhookTest>, HttpError> {
    Ok(Json(app.test_webhook(&id).await?))
}

pub async fn spend(State(app): App, RawQuery(q): RawQuery) -> Result<Json<SpendSeries>, HttpError> {
    let days = query_number::<u32>(&q, "days")?.unwrap_or(30);
    Ok(Json(app.spend_series(days).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_fractional_numbers_are_found_and_others_are_not() {
        let found = |s: &str| inexact_number(s.as_bytes());
        assert_eq!(
            found(r#"{"max_dollars": 0.10000000000000000555}"#).as_deref(),
            Some("0.10000000000000000555")
        );
        assert_eq!(
            found(r#"{"a": 1.234567890123456e2}"#).as_deref(),
            Some("1.234567890123456e2")
        );
        assert_eq!(
            found(r#"{"a": 0.000000000001, "b": 18446744073709551615}"#),
            None
        );
        assert_eq!(
            found(r#"{"a": "0.10000000000000000555", "b\"": 1.5}"#),
            None
        );
        assert_eq!(
            found(r#"{"a": 123456789012345.6}"#).as_deref(),
            Some("123456789012345.6")
        );
    }
}
