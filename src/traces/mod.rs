//! OpenTelemetry traces (docs/metrics.md): one span per proxied request, exported over
//! OTLP/HTTP protobuf when the standard `OTEL_*` variables ask for it, and nothing at all when
//! they do not. Spans go through a bounded queue to a background task that sends them in
//! batches: a slow or missing collector drops spans, never delays a request. A span carries
//! what the GenAI semantic conventions name (model, token counts) and the budget, cost and
//! admission decision — never a prompt, a response or a key.

use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

#[cfg(test)]
mod tests;
mod wire;

/// Spans waiting to be sent at most; past this, new ones are dropped (and counted).
const QUEUE: usize = 4096;
/// Spans a request carries at most.
const BATCH: usize = 512;
/// How long a span waits for others before its batch goes.
const LINGER: Duration = Duration::from_secs(1);

/// An attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Text(String),
    Int(i64),
    Float(f64),
}

/// `SPAN_KIND_CLIENT`: the proxy calls the model for its client, as the GenAI conventions
/// describe an inference.
pub const CLIENT: u8 = 3;

/// One finished span.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: String,
    pub kind: u8,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: Vec<(&'static str, Value)>,
    pub error: bool,
}

/// The trace a request belongs to: from its W3C `traceparent` header, if it has a valid one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// Reads `traceparent: 00-<32 hex>-<16 hex>-<2 hex>`; all-zero ids are invalid.
pub fn parent(header: &str) -> Option<Parent> {
    let mut parts = header.trim().split('-');
    let (version, trace, span, _flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let mut p = Parent {
        trace_id: [0; 16],
        span_id: [0; 8],
    };
    hex::decode_to_slice(trace, &mut p.trace_id).ok()?;
    hex::decode_to_slice(span, &mut p.span_id).ok()?;
    let zero = p.trace_id == [0; 16] || p.span_id == [0; 8];
    (!zero).then_some(p)
}

/// Where and how spans are sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub resource: Vec<(String, Value)>,
    pub timeout: Duration,
}

/// The configuration the `OTEL_*` variables give (`var` reads one): None when they export no
/// traces — no endpoint, `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER` other than `otlp`
/// — or ask for a protocol other than HTTP protobuf (said in the log).
pub fn config(var: impl Fn(&str) -> Option<String>) -> Option<Config> {
    let set = |k: &str| {
        var(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    if set("OTEL_TRACES_EXPORTER").is_some_and(|v| v != "otlp") {
        return None;
    }
    let endpoint = match set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        Some(e) => e,
        None => format!(
            "{}/v1/traces",
            set("OTEL_EXPORTER_OTLP_ENDPOINT")?.trim_end_matches('/')
        ),
    };
    let protocol =
        set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
    if protocol.as_deref().is_some_and(|p| p != "http/protobuf") {
        tracing::warn!(
            "OTEL_EXPORTER_OTLP_PROTOCOL {protocol:?} is not supported: agent-budget exports traces as http/protobuf only; no traces are sent"
        );
        return None;
    }
    let headers =
        set("OTEL_EXPORTER_OTLP_TRACES_HEADERS").or_else(|| set("OTEL_EXPORTER_OTLP_HEADERS"));
    let timeout = set("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .or_else(|| set("OTEL_EXPORTER_OTLP_TIMEOUT"))
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis);
    let mut resource: Vec<(String, Value)> = pairs(set("OTEL_RESOURCE_ATTRIBUTES").as_deref())
        .into_iter()
        .map(|(k, v)| (k, Value::Text(v)))
        .collect();
    let service = set("OTEL_SERVICE_NAME").unwrap_or_else(|| "agent-budget".into());
    resource.retain(|(k, _)| k != "service.name");
    resource.push(("service.name".into(), Value::Text(service)));
    resource.push((
        "service.version".into(),
        Value::Text(env!("CARGO_PKG_VERSION").into()),
    ));
    Some(Config {
        endpoint,
        headers: pairs(headers.as_deref()),
        resource,
        timeout: timeout.min(Duration::from_secs(60)),
    })
}

/// `k=v,k2=v2` with percent-encoded values (the `OTEL_*` list format); bad items are skipped.
fn pairs(list: Option<&str>) -> Vec<(String, String)> {
    let Some(list) = list else { return Vec::new() };
    list.split(',')
        .filter_map(|item| {
            let (k, v) = item.split_once('=')?;
            let v = percent_decode(v.trim())?;
            Some((k.trim().to_string(), v)).filter(|(k, _)| !k.is_empty())
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// Queues finished spans for the background sender.
#[derive(Debug)]
pub struct Exporter {
    queue: mpsc::Sender<Span>,
    /// Asks the sender to send all that is queued now, and say when it has.
    flushes: mpsc::Sender<oneshot::Sender<()>>,
    dropped: std::sync::atomic::AtomicU64,
}

impl Exporter {
    /// Starts the sender; it sends what is queued, and stops once the exporter is dropped
    /// and the queue is empty.
    pub fn start(config: Config, client: reqwest::Client) -> Exporter {
        let (queue, rx) = mpsc::channel(QUEUE);
        let (flushes, asked) = mpsc::channel(1);
        tokio::spawn(send_batches(config, client, rx, asked));
        Exporter {
            queue,
            flushes,
            dropped: Default::default(),
        }
    }

    /// Sends every span queued so far without waiting out the batch's linger (at exit,
    /// before the runtime that sends them is gone); false if that took longer than `within`.
    pub async fn flush(&self, within: Duration) -> bool {
        let (done, sent) = oneshot::channel();
        let asked = async { self.flushes.send(done).await.is_ok() && sent.await.is_ok() };
        tokio::time::timeout(within, asked).await.unwrap_or(false)
    }

    /// Queues a span; a full queue drops it.
    pub fn record(&self, span: Span) {
        if self.queue.try_send(span).is_err() {
            let n = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n + 1,
                    "spans dropped: the OTLP collector is slower than the requests"
                );
            }
        }
    }
}

/// New random span (or trace) ids.
pub fn random_ids() -> ([u8; 16], [u8; 8]) {
    let mut bytes = [0u8; 24];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: ids from the clock, still unique enough to tell spans apart.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos());
        bytes[..16].copy_from_slice(&t.to_le_bytes());
        bytes[16..].copy_from_slice(&(t as u64).rotate_left(17).to_le_bytes());
    }
    let (mut trace, mut span) = ([0u8; 16], [0u8; 8]);
    trace.copy_from_slice(&bytes[..16]);
    span.copy_from_slice(&bytes[16..]);
    (trace, span)
}

async fn send_batches(
    config: Config,
    client: reqwest::Client,
    mut rx: mpsc::Receiver<Span>,
    mut asked: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        // A batch starts with a span and lingers for more, unless a flush is asked for.
        let mut flush = None;
        tokio::select! {
            s = rx.recv() => match s {
                Some(s) => batch.push(s),
                None => return,
            },
            Some(done) = asked.recv() => flush = Some(done),
        }
        let until = tokio::time::Instant::now() + LINGER;
        while flush.is_none() && !batch.is_empty() && batch.len() < BATCH {
            tokio::select! {
                s = tokio::time::timeout_at(until, rx.recv()) => match s {
                    Ok(Some(s)) => batch.push(s),
                    _ => break,
                },
                Some(done) = asked.recv() => flush = Some(done),
            }
        }
        if flush.is_some() {
            while let Ok(s) = rx.try_recv() {
                batch.push(s);
            }
        }
        for chunk in batch.chunks(BATCH) {
            send(&config, &client, chunk).await;
        }
        batch.clear();
        if let Some(done) = flush {
            let _ = done.send(());
        }
    }
}

async fn send(config: &Config, client: &reqwest::Client, spans: &[Span]) {
    let mut req = client
        .post(&config.endpoint)
        .header("content-type", "application/x-protobuf")
        .timeout(config.timeout)
        .body(wire::export(&config.resource, spans));
    for (k, v) in &config.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => {
            tracing::warn!(status = %r.status(), spans = spans.len(), "the OTLP collector refused spans")
        }
        Err(e) => {
            tracing::warn!(error = %e, spans = spans.len(), "spans not sent to the OTLP collector")
        }
    }
}
