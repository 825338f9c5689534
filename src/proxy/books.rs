//! The accounting seam. Where a budget's books are kept — this proxy's ledger alone, or also
//! the team database (`--database`) — is decided once per request (`Books::of`) and carried by
//! its `Reservation`, which reserves, shrinks and settles on both. On a team a request is
//! admitted only once its worst case is reserved across all proxies, and its response's last
//! byte waits for its charge to be committed there.

use super::refusal::{Denied, Refused};
use crate::budget::alert::{self, AlertKind, NewAlert};
use crate::budget::period;
use crate::error::HttpError;
use crate::ledger::{self, Limit, Refusal, Slot, Status};
use crate::money::Money;
use crate::record::UsageRow;
use crate::service::{Service, webhook};
use crate::store;
use crate::team::{Ask, Charge, Hold, KEY_SCOPE, Scope, Team};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long a response's last byte waits for its team charge before it is released (the
/// charge is still retried in the background while the proxy runs).
const LAST_BYTE_WAIT: Duration = Duration::from_secs(5);

/// Where a budget's accounting is kept.
#[derive(Clone, Debug)]
pub enum Books {
    /// This proxy's ledger alone: no team, or the built-in `default`, each proxy's own.
    Local,
    /// Also the team database, shared by all proxies.
    Team(Arc<Team>),
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

impl Books {
    pub fn of(app: &Service, budget: &str) -> Books {
        app.team_of(budget)
            .map_or(Books::Local, |t| Books::Team(t.clone()))
    }

    /// Makes a reservation of `local`, which this proxy's ledger admitted. A team budget's
    /// worst case is reserved across all proxies too, on every scope of its chain at once —
    /// capped or not, so that the team's spend is whole when a cap comes; a refusal there
    /// names the scope and reports the team's figures.
    pub async fn reserve(
        &self,
        app: &Service,
        (slot, local): (&Arc<Slot>, ledger::Reservation),
        key: Option<&str>,
    ) -> Result<Reservation, Denied> {
        let Books::Team(team) = self else {
            return Ok(Reservation {
                local,
                team: None,
                slot: slot.clone(),
            });
        };
        let now = period::now();
        let chain: Vec<Status> = local.slots().iter().map(|s| s.status(now)).collect();
        let scopes: Vec<Scope> = local
            .slots()
            .iter()
            .zip(&chain)
            .map(|(slot, s)| {
                let (name, period) = team_scope(slot, s);
                Scope {
                    name,
                    period,
                    max_dollars: s.budget.max_dollars,
                    max_tokens: s.budget.max_tokens,
                }
            })
            .collect();
        let (cost, tokens) = (local.worst_case(), local.tokens());
        let subtree = |name: &str| app.ledger.subtree(name);
        let ask = Ask {
            scopes: &scopes,
            amount: cost,
            tokens,
            subtree: &subtree,
            key,
        };
        let refused = match team.reserve(ask).await.map_err(unreachable)? {
            Ok(hold) => {
                return Ok(Reservation {
                    local,
                    team: Some(hold),
                    slot: slot.clone(),
                });
            }
            Err(refused) => refused,
        };
        // The local reservation is released as `local` drops.
        match refusal(&chain, refused, (cost, tokens)) {
            Some(r) => Err(Refused::limit(r, cost).into()),
            None => Err(
                unreachable("the team database refused a scope the request does not have").into(),
            ),
        }
    }

    /// Counts a refused request in the books. Returns the alert of the budget's first refusal
    /// in the period when it goes with this request's record: alone, this proxy's first. On a
    /// team the proxy that claims the team's first raises it at once (so none goes with the
    /// record), unless the database cannot say: then this proxy's first (a repeated alert
    /// beats a lost one).
    pub async fn count_refusal(
        &self,
        app: &Service,
        slot: &Slot,
        worst_case: Money,
        model: &str,
        now: DateTime<Utc>,
    ) -> Option<NewAlert> {
        let first = slot.count_blocked(worst_case, now);
        let alert = |s: &Status| s.alert(AlertKind::Blocked, None, None, now);
        let Books::Team(team) = self else {
            return first.as_ref().map(alert);
        };
        let (day, budget) = (app.config.zone.day(now).to_string(), slot.name());
        let (counted, model) = (team.clone(), model.to_string());
        // In the background, tracked so shutdown waits for it: the refused request does not
        // wait for the team's daily totals (and a lost count loses no money).
        app.tracker.spawn(async move {
            if let Err(e) = counted.count_blocked(&day, &budget, &model).await {
                tracing::debug!(budget, "a refusal is not in the team's daily totals: {e}");
            }
        });
        let status = first?;
        let period = crate::team::period_key(status.budget.period, &status.window);
        match team.claim(&status.budget.name, period, &[0]).await {
            Ok(claimed) if claimed.is_empty() => None,
            Ok(_) => {
                raise(app, team, period, vec![(0, alert(&status))]).await;
                None
            }
            Err(_) => Some(alert(&status)),
        }
    }
}

/// The refusal of the scope the team database found full, with the team's figures.
fn refusal(
    chain: &[Status],
    refused: crate::team::Refused,
    (cost, tokens): (Money, u64),
) -> Option<Refusal> {
    let (i, shared) = (refused.index, refused.shared);
    let mut status = chain.get(i)?.clone();
    let over_dollars = status
        .budget
        .max_dollars
        .is_some_and(|cap| shared.spent + shared.reserved + cost > cap);
    status.period.dollars = shared.spent;
    status.period.tokens = shared.spent_tokens;
    status.reserved = shared.reserved;
    status.reserved_tokens = shared.reserved_tokens;
    Some(Refusal {
        status,
        cost,
        tokens,
        limit: if over_dollars {
            Limit::Dollars
        } else {
            Limit::Tokens
        },
        below: (chain.first())
            .filter(|_| i > 0)
            .map(|c| ledger::chain::subject(&c.budget)),
        session: None,
    })
}

/// An admitted request's hold on its budget's books: here, and across all proxies for a team
/// budget. Settle it; dropped unsettled (a task that panicked or was cancelled), it frees what
/// it held here, and the team's hold expires with its lease.
#[must_use = "a reservation must be settled"]
#[derive(Debug)]
pub struct Reservation {
    local: ledger::Reservation,
    team: Option<Hold>,
    slot: Arc<Slot>,
}

/// A settled reservation: the alerts its charge raised here, and what is left to commit.
pub struct Settled {
    /// The thresholds the charge reached in this proxy's ledger; none for a team budget,
    /// whose thresholds are the team's spend's, raised once the charge is committed there.
    pub alerts: Vec<NewAlert>,
    /// The team's hold, with the chain's scopes here.
    team: Option<(Hold, Vec<Arc<Slot>>)>,
}

impl Reservation {
    /// Dollars left before this request (cap − spent − other in-flight), None if uncapped.
    pub fn remaining(&self) -> Option<Money> {
        self.local.remaining()
    }
    pub fn worst_case(&self) -> Money {
        self.local.worst_case()
    }
    /// The budget it holds.
    pub fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }

    /// Lowers the reservation to what is now known to be the most the request can still
    /// cost; the team's in the background (a failure only leaves more held until the charge).
    pub fn shrink(&mut self, app: &Service, cost: Money, tokens: u64) {
        self.local.shrink(cost, tokens);
        if let Some(hold) = &self.team {
            let (team, hold) = (hold.team().clone(), hold.id());
            app.tracker.spawn(async move {
                if let Err(e) = team.shrink(hold, cost, tokens).await {
                    tracing::debug!("a team reservation keeps its worst case: {e}");
                }
            });
        }
    }

    /// Swaps the reservation for the actual charge, on the chain as it is now (`Ledger::moved`:
    /// its budget may have moved, or its key, `key`, been given a cap since).
    pub fn settle(
        mut self,
        (ledger, key): (&ledger::Ledger, Option<i64>),
        (cost, tokens): (Money, u64),
        now: DateTime<Utc>,
    ) -> Settled {
        if let Some(chain) = ledger.moved(self.local.slots(), key) {
            self.local.rechain(chain);
        }
        let team = self.team.map(|h| (h, self.local.slots().to_vec()));
        let scopes = self.local.settle(cost, tokens, now);
        let alerts = match &team {
            None => scopes
                .iter()
                .filter_map(|s| Some((s.status.as_ref()?, &s.reached)))
                .flat_map(|(st, reached)| {
                    reached
                        .iter()
                        .map(move |t| st.alert(AlertKind::Threshold, Some(*t), None, now))
                })
                .collect(),
            Some(_) => Vec::new(),
        };
        Settled { alerts, team }
    }
}

impl Settled {
    /// What is left to commit in the team database for a team budget: the charge `row`
    /// records.
    pub fn in_team(self, row: &UsageRow) -> Option<TeamCharge> {
        let (hold, chain) = self.team?;
        let charge = Charge {
            cost: row.cost,
            tokens: row.tokens.total(),
            created_at: row.created_at.timestamp_millis(),
            model: row.model.clone(),
            upstream_request_id: row.upstream_request_id.clone(),
            day: row.day.to_string(),
            scopes: chain
                .iter()
                .map(|slot| team_scope(slot, &slot.status(row.created_at)))
                .collect(),
        };
        Some(TeamCharge {
            hold,
            chain,
            charge,
        })
    }
}

/// A scope's row in the team database: its name (`key:<lineage>` for a key's) and period.
fn team_scope(slot: &Slot, s: &Status) -> (String, i64) {
    let name = match slot.key_hash() {
        Some(hash) => format!("{KEY_SCOPE}{hash}"),
        None => s.budget.name.clone(),
    };
    (name, crate::team::period_key(s.budget.period, &s.window))
}

/// A charge on its way to the team database.
pub struct TeamCharge {
    hold: Hold,
    chain: Vec<Arc<Slot>>,
    charge: Charge,
}

impl TeamCharge {
    /// Commits the charge, retrying while it fails; says on the receiver (with the local
    /// record's `saved`, None once committed) when the response's last byte may go.
    pub fn commit(
        self,
        app: &Arc<Service>,
        saved: Option<oneshot::Receiver<bool>>,
    ) -> oneshot::Receiver<bool> {
        let (ack, answer) = oneshot::channel();
        let app = app.clone();
        app.clone().tracker.spawn(async move {
            let local = async move {
                match saved {
                    None => true,
                    Some(s) => s.await.unwrap_or(false),
                }
            };
            let TeamCharge {
                hold,
                chain,
                charge,
            } = self;
            let committed = settle_in_team(&app, hold, &chain, &charge, (ack, local)).await;
            if !committed {
                tracing::error!(
                    cost = %charge.cost,
                    "a team charge could not be committed before shutdown; its reservation expires with its lease"
                );
            }
        });
        answer
    }
}

/// Settles `hold` with `charge`, retrying while the database fails, until shutdown. Says on
/// the acknowledgement, once the local record is saved too, whether both are committed: at
/// once, or when the last byte has waited long enough (then `false`).
async fn settle_in_team(
    app: &Service,
    hold: Hold,
    chain: &[Arc<Slot>],
    charge: &Charge,
    ack: (oneshot::Sender<bool>, impl Future<Output = bool>),
) -> bool {
    let team = hold.team().clone();
    let scopes = hold.scopes().to_vec();
    let deadline = Instant::now() + LAST_BYTE_WAIT;
    let mut ack = Some(ack);
    let (mut hold, mut pause) = (hold, Duration::from_millis(100));
    let committed = loop {
        match team.settle(hold, charge).await {
            Ok(spent) => {
                for (name, after) in spent {
                    let Some(((_, period), slot)) = scopes
                        .iter()
                        .zip(chain)
                        .find(|((n, _), s)| *n == name && s.id() >= 0)
                    else {
                        continue;
                    };
                    let before = after - charge.cost;
                    raise_thresholds(app, &team, slot, *period, before, after).await;
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
            _ = app.abort.cancelled() => break false,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(LAST_BYTE_WAIT);
    };
    if let Some((ack, local)) = ack.take() {
        let saved = local.await;
        let _ = ack.send(saved && committed);
    }
    committed
}

/// Raises the thresholds this charge crossed in the team's spend: the settlements of a budget
/// are serialised on its row, so exactly one crosses each, and the claim keeps it once.
async fn raise_thresholds(
    app: &Service,
    team: &Team,
    slot: &Slot,
    period: i64,
    before: Money,
    after: Money,
) {
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
            let name = &status.budget.name;
            tracing::warn!("team alerts {crossed:?} of '{name}' not raised: {e}");
            return;
        }
    };
    status.period.dollars = after;
    let raised = claimed
        .iter()
        .map(|t| (*t, status.alert(AlertKind::Threshold, Some(*t), None, now)))
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
    app.announce(&here);
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
            let name = &a.budget;
            tracing::warn!("the webhook of a team alert of '{name}' is not queued: {e}");
        }
    }
}
