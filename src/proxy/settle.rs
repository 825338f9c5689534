//! Settlement: turns what a response revealed into a charge, swaps the reservation for it,
//! and queues the usage record. `Relay` does this for a stream as its bytes pass through,
//! holding back only the chunk that ends the message until its record is committed.

use super::sse::Tap;
use crate::budget::alert::{AlertKind, NewAlert};
use crate::budget::period;
use crate::events::CoreEvent;
use crate::ledger::Reservation;
use crate::money::Money;
use crate::pricing::cost::{self, Ask, Tokens, Usage};
use crate::pricing::{Price, PriceBook, PricedAs};
use crate::record::UsageRow;
use crate::record::UsageStatus;
use crate::service::Service;
use crate::team::{Charge, Hold};
use bytes::Bytes;
use futures_util::Stream;
use futures_util::stream::BoxStream;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::oneshot;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// How a request ended, as far as money is concerned.
#[expect(
    clippy::large_enum_variant,
    reason = "built once per request and consumed at once"
)]
pub enum Outcome {
    /// The response reported usage (possibly partial, then `estimated`).
    Usage {
        usage: Usage,
        model: Option<String>,
        status: UsageStatus,
        estimated: bool,
    },
    /// Nothing was generated: no charge.
    Free(UsageStatus),
    /// Output of unknown size: charge the whole reservation, flagged estimated.
    WorstCase(UsageStatus),
}

/// Everything needed to settle one admitted request.
pub struct Settlement {
    pub reservation: Reservation,
    /// Its reservation across all proxies, with `--database`.
    pub team: Option<crate::team::Hold>,
    /// The worst case as admitted (the reservation may shrink later).
    pub worst_case: Money,
    /// What was reserved for, to shrink the reservation once a stream's prompt is known.
    pub ask: Ask,
    pub price: Arc<Price>,
    /// Whether the prompt `message_start` reports bounds the request's input (no server tools).
    pub early_input: bool,
    pub clamped_max_tokens: Option<u64>,
    pub session: Option<String>,
    /// Alerts raised while admitting it (a loop), stored with its record.
    pub alerts: Vec<NewAlert>,
    pub app: Arc<Service>,
    pub book: Arc<PriceBook>,
    pub budget_id: i64,
    /// The budget's name, for the events this request publishes.
    pub budget: String,
    pub model: String,
    pub stream: bool,
    pub started: Instant,
    pub http_status: u16,
    pub upstream_request_id: Option<String>,
}

impl Settlement {
    /// A stream's `message_start` told the exact prompt: hold only what the request can still
    /// cost (exact input + the output's worst case), freeing the rest for other requests now.
    fn shrink_to(&mut self, start: &Usage) {
        if !self.early_input {
            return;
        }
        if let Some((cost, tokens)) = cost::worst_case_after_start(&self.price, &self.ask, start) {
            self.reservation.shrink(cost, tokens);
            if let Some(hold) = &self.team {
                super::team::shrink(&self.app, hold, cost, tokens);
            }
        }
    }

    /// The record, with the alerts the charge raised here (none for a team budget, whose
    /// thresholds are the team's: `team`).
    fn row(self, outcome: Outcome, team: bool) -> UsageRow {
        let now = period::now();
        let mut malformed = None;
        let (cost, tokens, priced_as, status, estimated, model) = match outcome {
            Outcome::Usage {
                usage,
                model,
                status,
                ..
            } if !usage.plausible() => {
                let model = model.unwrap_or(self.model);
                tracing::warn!(model = %model, "the upstream reported an impossible usage; charged the reservation");
                malformed = Some(model.clone());
                let priced_as = self.book.lookup(&model).1;
                let cost = self.reservation.worst_case();
                (cost, Tokens::default(), priced_as, status, true, model)
            }
            Outcome::Usage {
                usage,
                model,
                status,
                estimated,
            } => {
                let model = model.unwrap_or(self.model);
                let c = cost::charge(&self.book, &model, &usage);
                if let Some(m) = &c.unpriced_model {
                    tracing::warn!(model = %m, "no price for this model; charged at the dearest known rates");
                }
                (c.cost, c.tokens, c.priced_as, status, estimated, model)
            }
            Outcome::Free(status) => (
                Money::ZERO,
                Tokens::default(),
                PricedAs::Table,
                status,
                false,
                self.model,
            ),
            Outcome::WorstCase(status) => {
                let priced_as = self.book.lookup(&self.model).1;
                (
                    self.reservation.worst_case(),
                    Tokens::default(),
                    priced_as,
                    status,
                    true,
                    self.model,
                )
            }
        };
        let settled = self.reservation.settle(cost, tokens.total(), now);
        let mut alerts = self.alerts;
        // A team budget's thresholds are the team's spend, raised once it is committed there.
        if let Some(st) = settled.status.as_ref().filter(|_| !team) {
            alerts.extend(
                settled
                    .reached
                    .iter()
                    .map(|t| st.alert(AlertKind::Threshold, Some(*t), None, now)),
            );
        }
        let unpriced = (priced_as == PricedAs::Fallback).then(|| model.clone());
        let once = [
            (AlertKind::MalformedUsage, malformed),
            (AlertKind::UnpricedModel, unpriced),
        ];
        for (kind, model) in once.into_iter().filter_map(|(k, m)| Some((k, m?))) {
            if let Some(slot) = self.app.ledger.find(&self.budget_id.to_string()) {
                let alert = slot.status(now).alert(kind, None, Some(model), now);
                let first = alert.once_key().is_some_and(|k| {
                    self.app
                        .raised_once
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(k)
                });
                if first {
                    alerts.push(alert);
                }
            }
        }
        UsageRow {
            created_at: now,
            day: self.app.config.zone.day(now),
            budget_id: self.budget_id,
            model,
            status,
            estimated,
            priced_as,
            http_status: self.http_status,
            stream: self.stream,
            tokens,
            cost,
            duration_ms: self.started.elapsed().as_millis() as u64,
            upstream_request_id: self.upstream_request_id,
            worst_case: self.worst_case,
            clamped_max_tokens: self.clamped_max_tokens,
            session: self.session,
            alerts,
        }
    }

    /// Settles and makes the record; says who should be told of it. The team reservation, if
    /// any, comes back with what to charge it.
    fn settle(mut self, outcome: Outcome) -> (Arc<Service>, UsageRow, Option<(Hold, Charge)>) {
        let (app, budget) = (self.app.clone(), std::mem::take(&mut self.budget));
        let hold = self.team.take();
        let row = self.row(outcome, hold.is_some());
        publish(&app, budget, &row);
        let charge = hold.map(|h| {
            let c = Charge {
                cost: row.cost,
                tokens: row.tokens.total(),
                created_at: row.created_at.timestamp_millis(),
                model: row.model.clone(),
                upstream_request_id: row.upstream_request_id.clone(),
                day: row.day.to_string(),
            };
            (h, c)
        });
        (app, row, charge)
    }

    /// Settles and saves the record; the receiver, if any, says when it is committed (here,
    /// and in the team database for a team budget). Called from the exchange's tracked task or
    /// a stream's relay (which holds a tracker token), so the request is alone when it is the
    /// only one tracked.
    pub fn finish(self, outcome: Outcome) -> Option<oneshot::Receiver<bool>> {
        let budget_id = self.budget_id;
        let (app, row, charge) = self.settle(outcome);
        let alone = app.tracker.len() <= 1;
        let saved = app.store.writer.start_save(row, alone);
        match charge {
            Some((hold, charge)) => Some(super::team::commit(&app, hold, budget_id, charge, saved)),
            None => saved,
        }
    }

    /// Settles and waits for the record's commit.
    pub async fn finish_durably(self, outcome: Outcome) {
        let committed = match self.finish(outcome) {
            None => true,
            Some(ack) => ack.await.unwrap_or(false),
        };
        if !committed {
            tracing::warn!("a usage record is not saved yet; the writer keeps it and retries");
        }
    }
}

/// Tells listeners what a usage record says (under the budget's `name`, known to the caller,
/// so the hot path looks nothing up), and wakes webhook delivery if it raised alerts.
pub fn publish(app: &Service, name: String, row: &UsageRow) {
    if row.status == UsageStatus::Blocked {
        app.events.emit(CoreEvent::RequestBlocked {
            budget_id: row.budget_id,
            budget: name,
        });
    } else {
        app.events.emit(CoreEvent::UsageRecorded {
            budget_id: row.budget_id,
            budget: name,
            status: row.status,
            cost_dollars: row.cost,
        });
    }
    announce(app, &row.alerts);
}

/// Tells listeners of raised alerts and wakes webhook delivery.
pub fn announce(app: &Service, alerts: &[NewAlert]) {
    for a in alerts {
        app.events.emit(CoreEvent::AlertRaised {
            budget_id: a.budget_id,
            budget: a.budget.clone(),
            kind: a.kind,
            threshold: a.threshold,
            message: a.message(),
        });
    }
    if !alerts.is_empty() {
        app.alerts_raised.notify_one();
    }
}

const BROKEN: &[u8] = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"agent-budget: the upstream stream broke off before the message finished\"}}\n\n";

const SHUTTING_DOWN: &[u8] = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"agent-budget: the proxy is shutting down\"}}\n\n";

/// A streamed response body on its way to the client.
pub struct Relay {
    upstream: BoxStream<'static, std::io::Result<Bytes>>,
    tap: Tap,
    settlement: Option<Settlement>,
    ack: Option<oneshot::Receiver<bool>>,
    held: Option<Bytes>,
    finished: bool,
    abort: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Whether the reservation has been shrunk to the exact prompt.
    shrunk: bool,
    /// Counts the stream as in flight, so a record knows whether its request is alone.
    _in_flight: TaskTrackerToken,
}

impl Relay {
    pub fn new(
        upstream: BoxStream<'static, std::io::Result<Bytes>>,
        settlement: Settlement,
    ) -> Relay {
        let abort = Box::pin(settlement.app.abort.clone().cancelled_owned());
        let _in_flight = settlement.app.tracker.token();
        Relay {
            upstream,
            tap: Tap::default(),
            settlement: Some(settlement),
            ack: None,
            held: None,
            finished: false,
            abort,
            shrunk: false,
            _in_flight,
        }
    }

    /// What a stream that ended without its final usage (or whose usage came without a
    /// `message_delta`'s final figures) is charged: the usage seen, with output at least what
    /// was relayed, flagged estimated; with no usage seen, the whole reservation. Only an error
    /// event before any message is free (the API bills nothing for it).
    fn partial(&mut self, status: UsageStatus) -> Outcome {
        let out = self.tap.estimated_output();
        match self.tap.usage.take() {
            None if self.tap.error.is_some() && !self.tap.started && out == 0 => {
                Outcome::Free(status)
            }
            None => Outcome::WorstCase(status),
            Some(mut usage) => {
                usage.output_tokens = Some(out);
                Outcome::Usage {
                    usage,
                    model: self.tap.model.take(),
                    status,
                    estimated: true,
                }
            }
        }
    }

    /// `message_stop` arrived: exact if the stream told its final usage, else as `partial`.
    fn stopped(&mut self) -> Outcome {
        if !self.tap.final_usage {
            return self.partial(UsageStatus::Ok);
        }
        match self.tap.usage.take() {
            Some(usage) => Outcome::Usage {
                usage,
                model: self.tap.model.take(),
                status: UsageStatus::Ok,
                estimated: false,
            },
            None => Outcome::WorstCase(UsageStatus::Ok),
        }
    }

    /// Settles now and holds `chunk` back until the record is committed.
    fn settle_then_send(&mut self, outcome: Outcome, chunk: Bytes) {
        if let Some(s) = self.settlement.take() {
            self.ack = s.finish(outcome);
        }
        self.held = Some(chunk);
    }
}

impl Stream for Relay {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(ack) = this.ack.as_mut() {
                match Pin::new(ack).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(committed) => {
                        if !committed.unwrap_or(false) {
                            tracing::warn!(
                                "a usage record is not saved yet; the writer keeps it and retries"
                            );
                        }
                        this.ack = None;
                    }
                }
            }
            if let Some(chunk) = this.held.take() {
                return Poll::Ready(Some(Ok(chunk)));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            if this.abort.as_mut().poll(cx).is_ready() {
                this.finished = true;
                let outcome = this.partial(UsageStatus::ClientAborted);
                this.settle_then_send(outcome, Bytes::from_static(SHUTTING_DOWN));
                continue;
            }
            match this.upstream.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    let stopped = this.tap.feed(&chunk);
                    if !this.shrunk && this.tap.started {
                        this.shrunk = true;
                        if let (Some(s), Some(u)) = (this.settlement.as_mut(), &this.tap.usage) {
                            s.shrink_to(u);
                        }
                    }
                    if stopped && this.settlement.is_some() {
                        let outcome = this.stopped();
                        this.settle_then_send(outcome, chunk);
                        continue;
                    }
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(end) => {
                    this.finished = true;
                    if this.settlement.is_none() {
                        continue;
                    }
                    // Ended without message_stop: an upstream `event: error` already told the
                    // client; otherwise the stream broke and the client is told so.
                    let told = this.tap.error.is_some() && !matches!(end, Some(Err(_)));
                    let outcome = this.partial(UsageStatus::UpstreamError);
                    this.settle_then_send(
                        outcome,
                        if told {
                            Bytes::new()
                        } else {
                            Bytes::from_static(BROKEN)
                        },
                    );
                }
            }
        }
    }
}

impl Drop for Relay {
    /// The client went away mid-stream: the upstream is dropped with us; charge what was seen.
    fn drop(&mut self) {
        if self.settlement.is_some() {
            let outcome = self.partial(UsageStatus::ClientAborted);
            if let Some(s) = self.settlement.take() {
                let budget_id = s.budget_id;
                let (app, row, charge) = s.settle(outcome);
                app.store.writer.record_detached(row);
                if let Some((hold, charge)) = charge {
                    drop(super::team::commit(&app, hold, budget_id, charge, None));
                }
            }
        }
    }
}
