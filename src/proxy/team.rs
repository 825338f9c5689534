//! Team admission and settlement: with `--database`, a request admitted here is admitted
//! across all proxies only once its worst case is reserved in the team database too, and its
//! response's last byte waits for the charge to be committed there.

use super::admission::{Admitted, Refused};
use crate::budget::alert::{self, AlertKind, NewAlert};
use crate::budget::{Budget, period};
use crate::error::HttpError;
use crate::ledger::{Limit, Refusal, Slot, Status};
use crate::money::Money;
use crate::service::Service;
use crate::service::webhook;
use crate::store;
use crate::team::{Ask, Charge, Hold, Shared, Team};
use axum::http::StatusCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long a response's last byte waits for its team charge before it is released (the
/// charge is still retried in the background while the proxy runs).
const LAST_BYTE_WAIT: Duration = Duration::from_secs(5);

fn period_key(status: &Status) -> i64 {
    crate::team::period_key(status.budget.period, &status.window)
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
/// token cap needs no reservation, and the built-in `default` is each proxy's own; a refusal
/// reports the team's figures.
pub async fn share(
    app: &Service,
    slot: &Slot,
    budget: &Budget,
    mut admitted: Admitted,
) -> Result<Result<Admitted, Refused>, HttpError> {
    let capped = budget.max_dollars.is_some() || budget.max_tokens.is_some();
    let Some(team) = app.team_of(&budget.name).filter(|_| capped) else {
        return Ok(Ok(admitted));
    };
    let now = period::now();
    let window = period::window(budget.period, budget.created_at, now, app.config.zone);
    let (cost, tokens) = (
        admitted.reservation.worst_case(),
        admitted.reservation.tokens(),
    );
    let ask = Ask {
        budget: &budget.name,
        period: crate::team::period_key(budget.period, &window),
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
    let mut status = slot.status(now);
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

/// Lowers a stream's team reservation once its prompt is known, as its local one (in the
/// background: a failure only leaves more held until the charge).
pub fn shrink(app: &Service, hold: &Hold, cost: Money, tokens: u64) {
    let (team, hold) = (hold.team().clone(), hold.id());
    app.tracker.spawn(async move {
        if let Err(e) = team.shrink(hold, cost, tokens).await {
            tracing::debug!("a team reservation keeps its worst case: {e}");
        }
    });
}

/// Commits a settled request's charge in the team database, retrying while it fails; says on
/// `ack` (with the local record's `saved`) when the response's last byte may go.
pub fn commit(
    app: &Arc<Service>,
    hold: Hold,
    budget_id: i64,
    charge: Charge,
    saved: Option<oneshot::Receiver<bool>>,
) -> oneshot::Receiver<bool> {
    let (ack, answer) = oneshot::channel();
    let team = hold.team().clone();
    let (app, abort, period) = (app.clone(), app.abort.clone(), hold.period());
    app.clone().tracker.spawn(async move {
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
                Ok(after) => {
                    if let Some(after) = after {
                        let before = after - charge.cost;
                        raise_thresholds(&app, &team, budget_id, period, before, after).await;
                    }
                    break true;
                }
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

/// Raises the thresholds this charge crossed in the team's spend: the settlements of a budget
/// are serialised on its row, so exactly one crosses each, and the claim keeps it once.
async fn raise_thresholds(
    app: &Service,
    team: &Team,
    budget_id: i64,
    period: i64,
    before: Money,
    after: Money,
) {
    let Some(slot) = app.ledger.find(&budget_id.to_string()) else {
        return;
    };
    let now = period::now();
    let mut status = slot.status(now);
    let (thresholds, cap) = (status.budget.thresholds.clone(), status.budget.max_dollars);
    let earlier = alert::reached(&thresholds, cap, before, &[]);
    let crossed = alert::reached(&thresholds, cap, after, &earlier);
    if crossed.is_empty() {
        return;
    }
    let claimed = match team.claim(&status.budget.name, period, &crossed).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(
                "team alerts {crossed:?} of '{}' not raised: {e}",
                status.budget.name
            );
            return;
        }
    };
    status.period.dollars = after;
    let raised = claimed
        .iter()
        .map(|t| {
            let a = status.alert(AlertKind::Threshold, Some(*t), None, now);
            (*t, a)
        })
        .collect();
    raise(app, team, period, raised).await;
}

/// Stores team alerts here, for the dashboard, and their webhook deliveries in the team's
/// outbox, which whichever proxy finds them due delivers; tells listeners. `raised` pairs each
/// alert with its claim (its threshold, 0 for the first refusal).
async fn raise(app: &Service, team: &Team, period: i64, raised: Vec<(u8, NewAlert)>) {
    if raised.is_empty() {
        return;
    }
    let here: Vec<NewAlert> = raised
        .iter()
        .map(|(_, a)| NewAlert {
            webhook_url: None,
            ..a.clone()
        })
        .collect();
    let saved = here.clone();
    let stored = app
        .store
        .writer
        .run(move |tx| {
            let mut ids = Vec::new();
            for a in &saved {
                let new = store::alerts::insert(tx, a, a.created_at)?;
                ids.push(new.then(|| tx.last_insert_rowid()));
            }
            Ok(ids)
        })
        .await;
    let ids = match stored {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!("team alerts not saved: {e}");
            return;
        }
    };
    super::settle::announce(app, &here);
    for ((code, a), id) in raised.iter().zip(ids) {
        let (Some(url), Some(id)) = (&a.webhook_url, id) else {
            continue;
        };
        let (start, resets) = (a.window.start, a.window.resets_at);
        let period_name = a.period.as_str();
        let Some(payload) =
            webhook::payload(app, id, period_name, start, resets, a.budget_id).await
        else {
            continue;
        };
        let claim = format!("{}:{period}:{code}", a.budget);
        let at = a.created_at.timestamp_millis();
        if let Err(e) = team.enqueue(&claim, url, &payload.to_string(), at).await {
            tracing::warn!(
                "the webhook of a team alert of '{}' is not queued: {e}",
                a.budget
            );
        }
    }
}

/// Counts a refusal of a team budget in the team's daily totals, in the background: the
/// refused request does not wait for it (and a lost count loses no money).
pub fn count_blocked(app: &Service, budget: &str, row: &crate::record::UsageRow) {
    let Some(team) = app.team_of(budget).cloned() else {
        return;
    };
    let (day, budget, model) = (row.day.to_string(), budget.to_string(), row.model.clone());
    // Tracked, so shutdown waits for it like for any accounting.
    app.tracker.spawn(async move {
        if let Err(e) = team.count_blocked(&day, &budget, &model).await {
            tracing::debug!(budget, "a refusal is not in the team's daily totals: {e}");
        }
    });
}

/// A budget's first refusal of the period: alone, this proxy's first is returned for its
/// record to carry the alert. On a team, only the proxy that claims the team's first raises
/// it (returning None); raised here anyway when the database cannot say (a repeated alert
/// beats a lost one).
pub async fn first_block(
    app: &Service,
    first: Option<Status>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Status> {
    let Some((team, status)) = first
        .as_ref()
        .and_then(|s| Some((app.team_of(&s.budget.name)?, s)))
    else {
        return first;
    };
    let period = period_key(status);
    match team.claim(&status.budget.name, period, &[0]).await {
        Ok(claimed) if claimed.is_empty() => None,
        Ok(_) => {
            let alert = status.alert(AlertKind::Blocked, None, None, now);
            raise(app, team, period, vec![(0, alert)]).await;
            None
        }
        Err(_) => first,
    }
}
