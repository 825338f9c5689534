//! Admission: reserve the request's worst case against its budget, deferring to the
//! upstream's free `count_tokens` when the estimate's uncertainty could flip the decision.

use super::estimate::estimate;
use super::forward;
use super::request::MessagesRequest;
use crate::budget::period;
use crate::error::HttpError;
use crate::ledger::{Refusal, Reservation, Slot};
use crate::money::Money;
use crate::pricing::Price;
use crate::pricing::cost::{Ask, worst_case};
use crate::service::Service;
use axum::http::{HeaderMap, Method, StatusCode};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Fields `/v1/messages` accepts but `count_tokens` refuses; they do not change the prompt.
const NOT_COUNTED: [&str; 12] = [
    "max_tokens",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "service_tier",
    "inference_geo",
    "speed",
    "container",
    "cache_control",
];
const COUNT_TIMEOUT: Duration = Duration::from_secs(10);

fn fits(r: &Refusal, cost: Money, tokens: u64) -> bool {
    let s = &r.status;
    let dollars = s
        .budget
        .max_dollars
        .is_none_or(|cap| s.period.dollars + s.reserved + cost <= cap);
    let toks = s
        .budget
        .max_tokens
        .is_none_or(|cap| s.period.tokens + s.reserved_tokens + tokens <= cap);
    dollars && toks
}

/// Reserves the request's worst case, or explains why it cannot be admitted.
pub async fn admit(
    app: &Service,
    slot: &Arc<Slot>,
    price: &Price,
    req: &MessagesRequest,
    body: &Bytes,
    headers: &HeaderMap,
) -> Result<Reservation, Refusal> {
    let est = estimate(body, req.new_tokenizer);
    let ask = |input_tokens| Ask {
        input_tokens,
        ..req.ask
    };
    let high = ask(est.high);
    let refusal = match slot.reserve(
        worst_case(price, &high),
        est.high + req.ask.max_tokens,
        period::now(),
    ) {
        Ok(r) => return Ok(r),
        Err(r) => r,
    };
    let low = ask(est.low);
    if !fits(
        &refusal,
        worst_case(price, &low),
        est.low + req.ask.max_tokens,
    ) {
        return Err(refusal);
    }
    let Some(exact) = count_tokens(app, headers, body).await else {
        return Err(refusal);
    };
    slot.reserve(
        worst_case(price, &ask(exact)),
        exact + req.ask.max_tokens,
        period::now(),
    )
}

#[derive(Deserialize)]
struct Count {
    input_tokens: u64,
}

/// The exact prompt size from the upstream, or None if it cannot be had (then the
/// conservative estimate stands: fail closed).
async fn count_tokens(app: &Service, headers: &HeaderMap, body: &Bytes) -> Option<u64> {
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    for k in NOT_COUNTED {
        v.remove(k);
    }
    let body = Bytes::from(serde_json::to_vec(&v).ok()?);
    let send = forward::send(
        app,
        Method::POST,
        "/v1/messages/count_tokens",
        forward::request_headers(headers),
        Some(body),
    );
    let resp = tokio::time::timeout(COUNT_TIMEOUT, send).await.ok()?.ok()?;
    if !resp.status().is_success() {
        tracing::info!(status = %resp.status(), "count_tokens refused; keeping the conservative estimate");
        return None;
    }
    let bytes = tokio::time::timeout(COUNT_TIMEOUT, forward::read_all(app, resp.into_body()))
        .await
        .ok()?
        .ok()?;
    serde_json::from_slice::<Count>(&bytes)
        .ok()
        .map(|c| c.input_tokens)
}

/// The 429 of Anthropic's spend-limit gateway: `billing_error`, never retried by SDKs.
pub fn blocked(r: &Refusal, now: DateTime<Utc>, app: &Service) -> HttpError {
    let s = &r.status;
    let period = s.budget.period.as_str();
    let resets = match s.window.resets_at {
        Some(t) => format!("; resets {}", app.config.zone.render(t)),
        None => String::new(),
    };
    let detail = if r.by_tokens {
        format!(
            "{period} token cap: spent {} + in flight {} + this request up to {} > {} tokens",
            s.period.tokens,
            s.reserved_tokens,
            r.tokens,
            s.budget.max_tokens.unwrap_or(0)
        )
    } else {
        format!(
            "{period} cap: spent {} + in flight {} + this request up to {} > {}",
            s.period.dollars.display_cents(),
            s.reserved.display_cents(),
            r.cost.display_cents(),
            s.budget.max_dollars.unwrap_or_default().display_cents()
        )
    };
    let msg = format!(
        "agent-budget: budget '{}' would exceed its {detail}{resets}",
        s.budget.name
    );
    let err = HttpError::new(StatusCode::TOO_MANY_REQUESTS, "billing_error", msg)
        .with_header("x-should-retry", "false");
    match s.window.resets_at {
        Some(t) => {
            let ms = (t - now).num_milliseconds().max(1);
            err.with_header("retry-after", ((ms + 999) / 1000).to_string())
        }
        None => err,
    }
}
