//! Admission: reserve the request's worst case against its budget, deferring to the
//! upstream's free `count_tokens` when the estimate's uncertainty could flip the decision.

use super::estimate::estimate;
use super::forward;
use super::request::MessagesRequest;
use crate::budget::Admission;
use crate::budget::period;
use crate::error::HttpError;
use crate::ledger::{Refusal, Reservation, Room, Slot};
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

/// The lowest `max_tokens` a clamp forwards: below it an agent's turn is rarely useful, and
/// a refusal it can report beats a truncated answer.
pub const CLAMP_FLOOR: u64 = 1024;

/// An admitted request: its reservation and what it was admitted as.
#[derive(Debug)]
pub struct Admitted {
    pub reservation: Reservation,
    /// The worst case as reserved: input as estimated (or counted), `max_tokens` as forwarded.
    pub ask: Ask,
    /// Set when `max_tokens` was lowered to fit (`admission: "clamp"`).
    pub clamped: Option<u64>,
}

/// A refused request: why, and the worst case it asked for.
#[derive(Debug)]
pub struct Refused {
    pub refusal: Refusal,
    pub worst_case: Money,
}

/// Reserves the request's worst case, or explains why it cannot be admitted.
pub async fn admit(
    app: &Service,
    slot: &Arc<Slot>,
    price: &Price,
    req: &MessagesRequest,
    body: &Bytes,
    headers: &HeaderMap,
) -> Result<Admitted, Refused> {
    let est = estimate(body, req.new_tokenizer);
    let ask = |input_tokens| Ask {
        input_tokens,
        ..req.ask
    };
    let admitted = |reservation, ask| Admitted {
        reservation,
        ask,
        clamped: None,
    };
    let high = ask(est.high);
    let full = worst_case(price, &high);
    let refusal = match slot.reserve(full, est.high + req.ask.max_tokens, period::now()) {
        Ok(r) => return Ok(admitted(r, high)),
        Err(r) => r,
    };
    let low = ask(est.low);
    let mut known = high;
    if fits(
        &refusal,
        worst_case(price, &low),
        est.low + req.ask.max_tokens,
    ) {
        if let Some(exact) = count_tokens(app, headers, body).await {
            known = ask(exact);
            let cost = worst_case(price, &known);
            match slot.reserve(cost, exact + req.ask.max_tokens, period::now()) {
                Ok(r) => return Ok(admitted(r, known)),
                Err(_) if refusal.status.budget.admission == Admission::Clamp => {}
                Err(refusal) => {
                    return Err(Refused {
                        refusal,
                        worst_case: cost,
                    });
                }
            }
        }
    }
    let worst = worst_case(price, &known);
    if refusal.status.budget.admission == Admission::Clamp && req.max_tokens_at.is_some() {
        let floor = CLAMP_FLOOR.max(req.thinking_budget.map_or(0, |b| b + 1));
        let clamped = slot.reserve_within(worst, period::now(), |room| {
            largest_fit(price, &known, floor, room)
        });
        if let Some((reservation, n)) = clamped {
            return Ok(Admitted {
                reservation,
                ask: Ask {
                    max_tokens: n,
                    ..known
                },
                // Room freed meanwhile can make the whole request fit after all.
                clamped: (n < known.max_tokens).then_some(n),
            });
        }
    }
    Err(Refused {
        refusal,
        worst_case: worst,
    })
}

/// The largest `max_tokens` in `floor..=ask.max_tokens` whose worst case fits `room`, with
/// that worst case: (dollars, tokens, max_tokens). The worst case grows with `max_tokens`, so
/// a binary search finds it.
fn largest_fit(price: &Price, ask: &Ask, floor: u64, room: Room) -> Option<(Money, u64, u64)> {
    let mut hi = ask.max_tokens;
    if let Some(t) = room.tokens {
        hi = hi.min(t.checked_sub(ask.input_tokens)?);
    }
    let cost = |n| {
        worst_case(
            price,
            &Ask {
                max_tokens: n,
                ..*ask
            },
        )
    };
    let fits = |n| room.dollars.is_none_or(|d| cost(n) <= d);
    if hi < floor || !fits(floor) {
        return None;
    }
    let mut lo = floor; // fits
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some((cost(lo), ask.input_tokens + lo, lo))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::PriceBook;

    fn dollars(s: &str) -> Money {
        Money::parse(s).unwrap()
    }

    #[test]
    fn a_clamp_takes_the_largest_max_tokens_that_fits_and_never_goes_below_the_floor() {
        let book = PriceBook::seeded(vec![]).unwrap();
        let (opus, _) = book.lookup("claude-opus-4-8");
        // Output at $25/MTok: each token is 25 µ$; 10,000 input tokens at $5 cost $0.05.
        let ask = Ask {
            input_tokens: 10_000,
            max_tokens: 32_000,
            ..Ask::default()
        };
        let room = |d: &str, t: Option<u64>| Room {
            dollars: Some(dollars(d)),
            tokens: t,
        };
        let cases: [(&str, Room, u64, Option<u64>); 8] = [
            ("all of it fits", room("10", None), 1024, Some(32_000)),
            (
                "$0.30 leaves $0.25 of output",
                room("0.3", None),
                1024,
                Some(10_000),
            ),
            (
                "just under a token more",
                room("0.300024", None),
                1024,
                Some(10_000),
            ),
            ("the floor exactly", room("0.0756", None), 1024, Some(1024)),
            ("below the floor", room("0.0755", None), 1024, None),
            (
                "a thinking budget raises the floor",
                room("0.3", None),
                10_001,
                None,
            ),
            (
                "the token cap binds first",
                room("10", Some(15_000)),
                1024,
                Some(5_000),
            ),
            (
                "no room for the prompt",
                room("10", Some(9_000)),
                1024,
                None,
            ),
        ];
        for (what, r, floor, want) in cases {
            let got = largest_fit(&opus, &ask, floor, r);
            assert_eq!(got.map(|g| g.2), want, "{what}");
            if let Some((cost, tokens, n)) = got {
                assert!(r.dollars.is_none_or(|d| cost <= d), "{what}: fits");
                assert_eq!(
                    cost,
                    worst_case(
                        &opus,
                        &Ask {
                            max_tokens: n,
                            ..ask
                        }
                    ),
                    "{what}"
                );
                assert_eq!(tokens, 10_000 + n, "{what}");
                let more = worst_case(
                    &opus,
                    &Ask {
                        max_tokens: n + 1,
                        ..ask
                    },
                );
                assert!(
                    n == ask.max_tokens
                        || r.dollars.is_some_and(|d| more > d)
                        || r.tokens.is_some_and(|t| tokens + 1 > t),
                    "{what}: largest"
                );
            }
        }
    }
}
