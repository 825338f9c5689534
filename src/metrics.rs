//! The proxy's Prometheus metrics (`GET /agent-budget/metrics`, docs/metrics.md). Counters
//! and histograms are recorded as requests pass (an atomic add each); a budget's figures are
//! read from the ledger when scraped. Labels are budgets and models only — never sessions or
//! keys — and a model is named as the price table names it (`other` when unpriced), so a
//! client cannot grow the label set. Dollars are floats here, the one place a float is right:
//! Prometheus has no other number, and nothing is added up from them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// A float gauge, for dollars.
pub type DollarGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabel {
    pub budget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub budget: String,
    /// `forwarded` or `refused`.
    pub outcome: &'static str,
    /// Forwarded: how it ended (`ok`, `upstream_error`, `client_aborted`). Refused: what
    /// refused it (`dollars`, `tokens`, `hourly`, `session`, `window`, `rule`, `loop`).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: String,
    /// `input`, `output`, `cache_read`, `cache_write`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The upstream's HTTP status, or `transport` when it gave none.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `delivered` or `failed`.
    pub outcome: &'static str,
}

/// Seconds the proxy adds to a request: 50 µs to 100 ms.
const ADDED: [f64; 11] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];
/// Seconds the upstream takes to answer: 50 ms to 5 minutes.
const UPSTREAM: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Seconds a database call takes: 100 µs to 5 s.
pub const DATABASE: [f64; 11] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0, 5.0,
];

pub fn histogram(buckets: &[f64]) -> Histogram {
    Histogram::new(buckets.iter().copied())
}

/// Every metric, registered once.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub requests: Family<RequestLabels, Counter>,
    pub tokens: Family<TokenLabels, Counter>,
    pub cost: Family<BudgetLabel, Counter<f64, AtomicU64>>,
    pub added: Histogram,
    pub upstream: Histogram,
    pub upstream_errors: Family<StatusLabel, Counter>,
    pub open_streams: Gauge,
    pub writer_queue: Gauge,
    pub webhooks: Family<OutcomeLabel, Counter>,
    pub spent: Family<BudgetLabel, DollarGauge>,
    pub reserved: Family<BudgetLabel, DollarGauge>,
    pub cap: Family<BudgetLabel, DollarGauge>,
    pub remaining: Family<BudgetLabel, DollarGauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("agent_budget")),
            requests: Family::default(),
            tokens: Family::default(),
            cost: Family::default(),
            added: histogram(&ADDED),
            upstream: histogram(&UPSTREAM),
            upstream_errors: Family::default(),
            open_streams: Gauge::default(),
            writer_queue: Gauge::default(),
            webhooks: Family::default(),
            spent: Family::default(),
            reserved: Family::default(),
            cap: Family::default(),
            remaining: Family::default(),
        };
        m.register_own();
        m
    }

    fn register_own(&self) {
        let mut r = self.registry();
        r.register(
            "requests",
            "Requests by budget, outcome and reason",
            self.requests.clone(),
        );
        r.register(
            "tokens",
            "Tokens charged, by model and kind",
            self.tokens.clone(),
        );
        r.register(
            "cost_dollars",
            "Dollars charged, by budget",
            self.cost.clone(),
        );
        r.register(
            "added_latency_seconds",
            "Time the proxy adds before the upstream's answer starts back",
            self.added.clone(),
        );
        r.register(
            "upstream_seconds",
            "Time the upstream takes to answer (to its headers)",
            self.upstream.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream answers that are errors, by status",
            self.upstream_errors.clone(),
        );
        r.register(
            "open_streams",
            "Streaming responses being relayed",
            self.open_streams.clone(),
        );
        r.register(
            "writer_queue",
            "Usage records and jobs waiting for the writer",
            self.writer_queue.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome",
            self.webhooks.clone(),
        );
        r.register(
            "budget_spent_dollars",
            "Spend of each budget's current period",
            self.spent.clone(),
        );
        r.register(
            "budget_reserved_dollars",
            "Dollars held by requests in flight",
            self.reserved.clone(),
        );
        r.register(
            "budget_cap_dollars",
            "Each capped budget's dollar cap",
            self.cap.clone(),
        );
        r.register(
            "budget_remaining_dollars",
            "Dollars left under each capped budget's cap",
            self.remaining.clone(),
        );
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a metric owned elsewhere (the writer's commits, the team database's calls).
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry().register(name, help, metric);
    }

    /// Counts a request.
    pub fn request(&self, budget: &str, outcome: &'static str, reason: &'static str) {
        let labels = RequestLabels {
            budget: budget.to_string(),
            outcome,
            reason,
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts a forwarded request: how it ended, its tokens by kind (of `model`, as the price
    /// table names it) and the dollars charged.
    pub fn forwarded(
        &self,
        budget: &str,
        reason: &'static str,
        model: String,
        tokens: [(&'static str, u64); 4],
        dollars: f64,
    ) {
        self.request(budget, "forwarded", reason);
        let mut labels = TokenLabels { model, kind: "" };
        for (kind, n) in tokens.into_iter().filter(|(_, n)| *n > 0) {
            labels.kind = kind;
            self.tokens.get_or_create(&labels).inc_by(n);
        }
        let budget = BudgetLabel {
            budget: budget.to_string(),
        };
        self.cost.get_or_create(&budget).inc_by(dollars);
    }

    /// Notes the time to the upstream's answer and the time the proxy added around it:
    /// `arrived` is when the request came in, `sent` when it left for the upstream.
    pub fn timings(&self, arrived: std::time::Instant, sent: std::time::Instant) {
        let upstream = sent.elapsed();
        let total = arrived.elapsed();
        self.upstream.observe(upstream.as_secs_f64());
        self.added
            .observe(total.saturating_sub(upstream).as_secs_f64());
    }

    /// Counts an upstream error by its status (`transport` without one).
    pub fn upstream_error(&self, status: &str) {
        let labels = StatusLabel {
            status: status.to_string(),
        };
        self.upstream_errors.get_or_create(&labels).inc();
    }

    /// Counts a webhook delivery attempt.
    pub fn webhook(&self, delivered: bool) {
        let outcome = if delivered { "delivered" } else { "failed" };
        self.webhooks.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Everything, in the text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry()) {
            tracing::warn!("metrics not encoded: {e}");
        }
        out
    }
}

/// A budget's figures at a scrape.
pub struct Figures {
    pub budget: String,
    pub spent: f64,
    pub reserved: f64,
    pub cap: Option<f64>,
}

impl Metrics {
    /// Sets the budgets' gauges to `figures` (budgets deleted since the last scrape go).
    pub fn set_budgets(&self, figures: &[Figures]) {
        for family in [&self.spent, &self.reserved, &self.cap, &self.remaining] {
            family.clear();
        }
        for f in figures {
            let l = BudgetLabel {
                budget: f.budget.clone(),
            };
            self.spent.get_or_create(&l).set(f.spent);
            self.reserved.get_or_create(&l).set(f.reserved);
            if let Some(cap) = f.cap {
                self.cap.get_or_create(&l).set(cap);
                self.remaining
                    .get_or_create(&l)
                    .set((cap - f.spent - f.reserved).max(0.0));
            }
        }
    }
}

/// Counts a relayed stream as open while it lives.
pub struct OpenStream(Gauge);

impl OpenStream {
    pub fn new(metrics: &Arc<Metrics>) -> OpenStream {
        metrics.open_streams.inc();
        OpenStream(metrics.open_streams.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}
