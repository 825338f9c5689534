//! Team admission and settlement: with `--database`, a request admitted here is admitted
//! across all proxies only once its worst case is reserved in the team database too, and its
//! response's last byte waits for the charge to be committed there.

use super::admission::{Admitted, Refused};
use crate::budget::period::{self, Period};
use crate::error::HttpError;
use crate::ledger::{Limit, Refusal, Slot, Status};
use crate::service::Service;
use crate::team::{Ask, Charge, Hold, Shared, Team};
use axum::http::StatusCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long a response's last byte waits for its team charge before it is released (the
/// charge is still retried in the background while the proxy runs).
const LAST_BYTE_WAIT: Duration = Duration::from_secs(5);

/// The team database's key for a budget's period: total budgets have one period, whenever
/// each proxy created its copy.
fn period_key(status: &Status) -> i64 {
    match status.budget.period {
        Period::Total => 0,
        _ => status.window.start.timestamp_millis(),
    }
}

fn unreachable(e: impl std::fmt::Display) -> HttpError {
    HttpError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        format!(
            "agent-budget: {e}; requests are refused until it answers, so that no proxy can overrun a team budget"
        ),
    )
}

/// Reserves an admitted request's worst case across all proxies. A budget without a dollar or
/// token cap needs no reservation; a refusal reports the team's figures.
pub async fn share(
    app: &Service,
    slot: &Slot,
    mut admitted: Admitted,
) -> Result<Result<Admitted, Refused>, HttpError> {
    let Some(team) = &app.team else {
        return Ok(Ok(admitted));
    };
    let mut status = slot.status(period::now());
    let budget = &status.budget;
    if budget.max_dollars.is_none() && budget.max_tokens.is_none() {
        return Ok(Ok(admitted));
    }
    let (cost, tokens) = (
        admitted.reservation.worst_case(),
        admitted.reservation.tokens(),
    );
    let ask = Ask {
        budget: &budget.name,
        period: period_key(&status),
        amount: cost,
        tokens,
        max_dollars: budget.max_dollars,
        max_tokens: budget.max_tokens,
    };
    let shared: Shared = match team.reserve(ask).await.map_err(unreachable)? {
        Ok(hold) => {
            admitted.team = Some(hold);
            return Ok(Ok(admitted));
        }
        Err(shared) => shared,
    };
    let over_dollars = budget
        .max_dollars
        .is_some_and(|cap| shared.spent + shared.reserved + cost > cap);
    status.period.dollars = shared.spent;
    status.period.tokens = shared.spent_tokens;
    status.reserved = shared.reserved;
    status.reserved_tokens = shared.reserved_tokens;
    let refusal = Refusal {
        status,
        cost,
        tokens,
        limit: if over_dollars {
            Limit::Dollars
        } else {
            Limit::Tokens
        },
    };
    // The local reservation is released as `admitted` drops.
    Ok(Err(Refused::limit(refusal, cost)))
}

/// Commits a settled request's charge in the team database, retrying while it fails; says on
/// `ack` (with the local record's `saved`) when the response's last byte may go.
pub fn commit(
    app: &Arc<Service>,
    team: Arc<Team>,
    hold: Hold,
    charge: Charge,
    saved: Option<oneshot::Receiver<bool>>,
) -> oneshot::Receiver<bool> {
    let (ack, answer) = oneshot::channel();
    let abort = app.abort.clone();
    app.tracker.spawn(async move {
        let local = async move {
            match saved {
                None => true,
                Some(s) => s.await.unwrap_or(false),
            }
        };
        let deadline = Instant::now() + LAST_BYTE_WAIT;
        let mut ack = Some((ack, local));
        let (mut hold, mut pause) = (hold, Duration::from_millis(100));
        let committed = loop {
            match team.settle(hold, &charge).await {
                Ok(()) => break true,
                Err((h, e)) => {
                    hold = h;
                    tracing::warn!("a team charge is not committed yet, retrying: {e}");
                }
            }
            if Instant::now() >= deadline {
                if let Some((ack, local)) = ack.take() {
                    local.await;
                    let _ = ack.send(false);
                }
            }
            tokio::select! {
                _ = abort.cancelled() => break false,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(LAST_BYTE_WAIT);
        };
        if let Some((ack, local)) = ack.take() {
            let saved = local.await;
            let _ = ack.send(saved && committed);
        }
        if !committed {
            tracing::error!(
                cost = %charge.cost,
                "a team charge could not be committed before shutdown; its reservation expires with its lease"
            );
        }
    });
    answer
}
