//! Admission: reserve the request's worst case against its budget, deferring to the
//! upstream's free `count_tokens` when the estimate's uncertainty could flip the decision.

use super::books::Reservation;
use super::call::Call;
use super::estimate::estimate;
use super::forward;
use super::refusal::{Denied, Refused, Why};
use crate::budget::period;
use crate::budget::{Admission, Budget};
use crate::ledger::{self, Refusal, Room};
use crate::money::Money;
use crate::pricing::Price;
use crate::pricing::cost::{Ask, worst_case};
use crate::service::Service;
use axum::http::{HeaderMap, Method};
use bytes::Bytes;
use serde::Deserialize;
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
    let toks = s.budget.max_tokens.is_none_or(|cap| {
        s.period
            .tokens
            .saturating_add(s.reserved_tokens)
            .saturating_add(tokens)
            <= cap
    });
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

/// What this proxy's ledger admitted, before the budget's books take it (`Books::reserve`).
struct Here {
    reservation: ledger::Reservation,
    ask: Ask,
    clamped: Option<u64>,
}

/// The budget's rules for a single request: its model, and its worst case.
fn check_rules(budget: &Budget, model: &str, worst: Money) -> Result<(), String> {
    let name = &budget.name;
    if !crate::budget::allows(&budget.models, model) {
        let list = budget.models.as_deref().unwrap_or_default().join(", ");
        return Err(format!(
            "agent-budget: budget '{name}' allows only these models (its 'models' list): {list}; '{model}' is not one of them"
        ));
    }
    if let Some(ceiling) = budget.max_request_dollars.filter(|c| worst > *c) {
        return Err(format!(
            "agent-budget: this request could cost up to {} (its prompt and all of max_tokens), over budget '{name}''s per-request ceiling 'max_request_dollars' of {}; lower max_tokens or shorten the prompt",
            worst.display_cents(),
            ceiling.display_cents()
        ));
    }
    if let Some(rate) = budget
        .max_dollars_per_hour
        .filter(|r| worst > *r && budget.admission == Admission::Strict)
    {
        return Err(format!(
            "agent-budget: this request could cost up to {}, more than budget '{name}''s hourly rate 'max_dollars_per_hour' of {} allows in any hour; lower max_tokens or raise the rate",
            worst.display_cents(),
            rate.display_cents()
        ));
    }
    Ok(())
}

/// Reserves the request's worst case in its budget's books, or says why it cannot be
/// admitted: a repeat the loop guard blocks, a rule of the budget, a cap here or the team's.
pub async fn admit(call: &Call) -> Result<Admitted, Denied> {
    let slot = &call.slot;
    if let Some(h) = call.repeat
        && let Some(frees_in_ms) = slot.loop_refusal(h, period::now())
    {
        return Err(Refused::looping(frees_in_ms).into());
    }
    if let Some((message, resets_in)) =
        (call.app).window_refusal(&call.budget, call.account.as_deref())
    {
        let why = Why::Window { message, resets_in };
        return Err(Refused {
            why,
            worst_case: Money::ZERO,
        }
        .into());
    }
    let here = reserve_here(call).await?;
    let reservation = call
        .books
        .reserve(&call.app, (slot, here.reservation), call.keyed.as_deref())
        .await?;
    Ok(Admitted {
        reservation,
        ask: here.ask,
        clamped: here.clamped,
    })
}

/// Reserves the request's worst case in this proxy's ledger, deferring to `count_tokens`
/// when the estimate's uncertainty could flip the decision.
async fn reserve_here(call: &Call) -> Result<Here, Refused> {
    let (app, chain, budget, price) = (&*call.app, &call.chain, &call.budget, &*call.price);
    let session = call.session.as_deref();
    let (req, body, headers) = (&call.parsed, &call.body, &call.headers);
    let est = estimate(body, req.new_tokenizer);
    let ask = |input_tokens| Ask {
        input_tokens,
        ..req.ask
    };
    let admitted = |reservation, ask| Here {
        reservation,
        ask,
        clamped: None,
    };
    let high = ask(est.high);
    let full = worst_case(price, &high);
    if let Err(rule) = check_rules(budget, &req.model, full) {
        return Err(Refused {
            why: Why::Rule(rule),
            worst_case: full,
        });
    }
    let refusal = match ledger::reserve(
        chain,
        full,
        est.high.saturating_add(req.ask.max_tokens),
        period::now(),
        session,
    ) {
        Ok(r) => return Ok(admitted(r, high)),
        Err(r) => r,
    };
    let low = ask(est.low);
    let mut known = high;
    if fits(
        &refusal,
        worst_case(price, &low),
        est.low.saturating_add(req.ask.max_tokens),
    ) {
        if let Some(exact) = count_tokens(app, headers, body).await {
            known = ask(exact);
            let cost = worst_case(price, &known);
            match ledger::reserve(
                chain,
                cost,
                exact.saturating_add(req.ask.max_tokens),
                period::now(),
                session,
            ) {
                Ok(r) => return Ok(admitted(r, known)),
                Err(_) if refusal.status.budget.admission == Admission::Clamp => {}
                Err(refusal) => return Err(Refused::limit(refusal, cost)),
            }
        }
    }
    let worst = worst_case(price, &known);
    if refusal.status.budget.admission == Admission::Clamp && req.max_tokens_at.is_some() {
        let floor = CLAMP_FLOOR.max(req.thinking_budget.map_or(0, |b| b.saturating_add(1)));
        let clamped = ledger::reserve_within(chain, (worst, session), period::now(), |room| {
            largest_fit(price, &known, floor, room)
        });
        if let Some((reservation, n)) = clamped {
            return Ok(Here {
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
    Err(Refused::limit(refusal, worst))
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
    Some((cost(lo), ask.input_tokens.saturating_add(lo), lo))
}

#[derive(Deserialize)]
struct Count {
    input_tokens: u64,
}

/// The exact prompt size from the upstream, or None if it cannot be had (then the
/// conservative estimate stands: fail closed).
async fn count_tokens(app: &Service, headers: &HeaderMap, body: &Bytes) -> Option<u64> {
    // The top level only, its values as raw slices of the body: a tree of a 30 MB body
    // took 25 times its size in memory.
    let mut v: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
        serde_json::from_slice(body).ok()?;
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

#[cfg(test)]
mod tests;
