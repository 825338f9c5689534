//! Settlement: turns what a response revealed into a charge, swaps the reservation for it,
//! and queues the usage record. `Relay` does this for a stream as its bytes pass through,
//! holding back only the chunk that ends the message until its record is committed.

use super::admission::Admitted;
use super::books::{Reservation, TeamCharge};
use super::call::Call;
use super::facts::{Charged, Facts, Reply};
use super::sse::Tap;
use crate::budget::alert::{AlertKind, NewAlert};
use crate::budget::period;
use crate::pricing::cost::{self, Ask, Tokens, Usage};
use crate::pricing::{Price, PriceBook, PricedAs};
use crate::record::{UsageRow, UsageStatus};
use crate::service::Service;
use bytes::Bytes;
use futures_util::Stream;
use futures_util::stream::BoxStream;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
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
    app: Arc<Service>,
    book: Arc<PriceBook>,
    price: Arc<Price>,
    reservation: Reservation,
    /// What was reserved for, to shrink the reservation once a stream's prompt is known.
    ask: Ask,
    /// Whether the prompt `message_start` reports bounds the request's input (no server tools).
    early_input: bool,
    facts: Facts,
    /// Alerts raised while admitting it (a loop), stored with its record.
    alerts: Vec<NewAlert>,
}

impl Settlement {
    /// The settlement of an admitted request.
    pub fn new(mut call: Call, admitted: Admitted, alerts: Vec<NewAlert>) -> Settlement {
        let facts = call.facts(admitted.reservation.worst_case(), admitted.clamped);
        Settlement {
            app: call.app,
            book: call.book,
            price: call.price,
            reservation: admitted.reservation,
            ask: admitted.ask,
            early_input: !call.parsed.server_tools,
            facts,
            alerts,
        }
    }

    pub fn app(&self) -> &Arc<Service> {
        &self.app
    }

    /// A stream's `message_start` told the exact prompt: hold only what the request can still
    /// cost (exact input + the output's worst case), freeing the rest for other requests now.
    fn shrink_to(&mut self, start: &Usage) {
        if !self.early_input {
            return;
        }
        if let Some((cost, tokens)) = cost::worst_case_after_start(&self.price, &self.ask, start) {
            self.reservation.shrink(&self.app, cost, tokens);
        }
    }

    /// What the outcome costs; with the model when its usage was impossible (charged the
    /// reservation, and alerted once).
    fn charged(&self, outcome: Outcome) -> (Charged, Option<String>) {
        let model = |m: Option<String>| m.unwrap_or_else(|| self.facts.model.clone());
        let whole = |model: String, status| Charged {
            priced_as: self.book.lookup(&model).1,
            model,
            status,
            estimated: true,
            tokens: Tokens::default(),
            cost: self.reservation.worst_case(),
        };
        match outcome {
            Outcome::Usage {
                usage,
                model: m,
                status,
                ..
            } if !usage.plausible() => {
                let model = model(m);
                tracing::warn!(model = %model, "the upstream reported an impossible usage; charged the reservation");
                (whole(model.clone(), status), Some(model))
            }
            Outcome::Usage {
                usage,
                model: m,
                status,
                estimated,
            } => {
                let model = model(m);
                let c = cost::charge(&self.book, &model, &usage);
                if let Some(m) = &c.unpriced_model {
                    tracing::warn!(model = %m, "no price for this model; charged at the dearest known rates");
                }
                let charged = Charged {
                    model,
                    status,
                    estimated,
                    priced_as: c.priced_as,
                    tokens: c.tokens,
                    cost: c.cost,
                };
                (charged, None)
            }
            Outcome::Free(status) => {
                let charged = Charged::nothing(model(None), status, PricedAs::Table);
                (charged, None)
            }
            Outcome::WorstCase(status) => (whole(model(None), status), None),
        }
    }

    /// Settles and makes the record, and tells listeners of it; returns what is left to
    /// commit in the team database, if anything.
    fn settle(
        self,
        outcome: Outcome,
        reply: Reply,
    ) -> (Arc<Service>, UsageRow, Option<TeamCharge>) {
        let now = period::now();
        let (charged, malformed) = self.charged(outcome);
        let slot = self.reservation.slot().clone();
        let settled = self.reservation.settle(
            (&self.app.ledger, self.facts.attribution.key_id),
            (charged.cost, charged.tokens.total()),
            now,
        );
        let mut alerts = self.alerts;
        alerts.extend_from_slice(&settled.alerts);
        let unpriced = (charged.priced_as == PricedAs::Fallback).then(|| charged.model.clone());
        let once = [
            (AlertKind::MalformedUsage, malformed),
            (AlertKind::UnpricedModel, unpriced),
        ];
        for (kind, model) in once.into_iter().filter_map(|(k, m)| Some((k, m?))) {
            let alert = slot.status(now).alert(kind, None, Some(model), now);
            if self.app.first_time(&alert) {
                alerts.push(alert);
            }
        }
        let day = self.app.config.zone.day(now);
        let mut facts = self.facts;
        let trace = facts.trace.take();
        let (name, row) = facts.row(charged, reply, alerts, now, day);
        if let Some(t) = trace {
            self.app.trace(&name, &row, t);
        }
        self.app.publish(name, &row);
        let team = settled.in_team(&row);
        (self.app, row, team)
    }

    /// Settles and saves the record; the receiver, if any, says when it is committed (here,
    /// and in the team database for a team budget). Called from the exchange's tracked task or
    /// a stream's relay (which holds a tracker token), so the request is alone when it is the
    /// only one tracked.
    pub fn finish(self, outcome: Outcome, reply: Reply) -> Option<oneshot::Receiver<bool>> {
        let (app, row, team) = self.settle(outcome, reply);
        let alone = app.tracker.len() <= 1;
        let saved = app.store.writer.start_save(row, alone);
        match team {
            Some(charge) => Some(charge.commit(&app, saved)),
            None => saved,
        }
    }

    /// Settles and waits for the record's commit.
    pub async fn finish_durably(self, outcome: Outcome, reply: Reply) {
        let committed = match self.finish(outcome, reply) {
            None => true,
            Some(ack) => ack.await.unwrap_or(false),
        };
        if !committed {
            tracing::warn!("a usage record is not saved yet; the writer keeps it and retries");
        }
    }
}

const BROKEN: &[u8] = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"agent-budget: the upstream stream broke off before the message finished\"}}\n\n";

const SHUTTING_DOWN: &[u8] = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"agent-budget: the proxy is shutting down\"}}\n\n";

/// A streamed response body on its way to the client.
pub struct Relay {
    upstream: BoxStream<'static, std::io::Result<Bytes>>,
    tap: Tap,
    settlement: Option<Settlement>,
    /// The upstream's answer, for the record.
    reply: Reply,
    ack: Option<oneshot::Receiver<bool>>,
    held: Option<Bytes>,
    finished: bool,
    abort: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Whether the reservation has been shrunk to the exact prompt.
    shrunk: bool,
    /// Counts the stream as in flight, so a record knows whether its request is alone.
    _in_flight: TaskTrackerToken,
    /// And as open, in the metrics.
    _open: crate::metrics::OpenStream,
}

impl Relay {
    pub fn new(
        upstream: BoxStream<'static, std::io::Result<Bytes>>,
        settlement: Settlement,
        reply: Reply,
    ) -> Relay {
        let abort = Box::pin(settlement.app.abort.clone().cancelled_owned());
        let _in_flight = settlement.app.tracker.token();
        let _open = crate::metrics::OpenStream::new(&settlement.app.metrics);
        Relay {
            upstream,
            tap: Tap::default(),
            settlement: Some(settlement),
            reply,
            ack: None,
            held: None,
            finished: false,
            abort,
            shrunk: false,
            _in_flight,
            _open,
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
            self.ack = s.finish(outcome, std::mem::take(&mut self.reply));
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
                let (app, row, team) = s.settle(outcome, std::mem::take(&mut self.reply));
                app.store.writer.record_detached(row);
                if let Some(charge) = team {
                    drop(charge.commit(&app, None));
                }
            }
        }
    }
}
