//! What Claude Code's OpenTelemetry metrics say a session did: lines of code added and
//! removed, commits, pull requests and active time, read from an OTLP/HTTP export request
//! (protobuf or JSON). Everything else in the export (cost, tokens — the proxy prices those
//! itself — logs, traces) is not kept.
//!
//! An export is untrusted input: its size is bounded by the caller, each value is checked
//! (finite, non-negative, below a sane bound) and a request yields at most [`MAX_POINTS`].

mod json;
mod wire;

use sha2::{Digest, Sha256};

/// The most points one export request may add; the rest are dropped.
pub const MAX_POINTS: usize = 2_000;
/// A point above this is not believed (a billion lines, or 30 years of active time).
const MAX_VALUE: f64 = 1e9;

/// A per-session counter kept for the budget page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    LinesAdded,
    LinesRemoved,
    Commits,
    PullRequests,
    /// Milliseconds (the metric is in seconds).
    ActiveMs,
}

impl Counter {
    pub fn as_str(self) -> &'static str {
        match self {
            Counter::LinesAdded => "lines_added",
            Counter::LinesRemoved => "lines_removed",
            Counter::Commits => "commits",
            Counter::PullRequests => "pull_requests",
            Counter::ActiveMs => "active_ms",
        }
    }
}

/// One data point of a kept counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    /// Claude Code's `session.id`.
    pub session: String,
    pub counter: Counter,
    /// The point's time series (a digest of its attributes): a cumulative point replaces the
    /// series' last value, a delta adds to it.
    pub series: String,
    pub value: u64,
    pub cumulative: bool,
}

/// Why an export could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OtlpError {
    #[error("the OTLP protobuf message is malformed: {0}")]
    Protobuf(&'static str),
    #[error("the OTLP JSON message is malformed: {0}")]
    Json(String),
}

/// A metric as both encodings give it: its name, whether its sum is cumulative, its points.
struct Metric {
    name: String,
    /// OTLP's `AggregationTemporality`: 1 delta, 2 cumulative; `None` for a gauge or histogram.
    temporality: Option<u64>,
    points: Vec<RawPoint>,
}

struct RawPoint {
    attributes: Vec<(String, String)>,
    value: f64,
}

/// The kept points of an `ExportMetricsServiceRequest`.
pub fn metrics(body: &[u8], is_json: bool) -> Result<Vec<Point>, OtlpError> {
    let resources = match is_json {
        true => json::resources(body)?,
        false => wire::resources(body)?,
    };
    let mut out = Vec::new();
    for (resource, metrics) in resources {
        for m in metrics {
            let Some(kind) = kind_of(&m.name) else {
                continue;
            };
            let cumulative = match m.temporality {
                Some(1) => false,
                Some(2) => true,
                _ => continue,
            };
            for p in &m.points {
                if out.len() == MAX_POINTS {
                    return Ok(out);
                }
                out.extend(point(kind, p, &resource, cumulative));
            }
        }
    }
    Ok(out)
}

/// What a metric's name counts; lines are split by their `type` attribute.
#[derive(Clone, Copy)]
enum Kind {
    Lines,
    Fixed(Counter),
}

fn kind_of(name: &str) -> Option<Kind> {
    Some(match name {
        "claude_code.lines_of_code.count" => Kind::Lines,
        "claude_code.commit.count" => Kind::Fixed(Counter::Commits),
        "claude_code.pull_request.count" => Kind::Fixed(Counter::PullRequests),
        "claude_code.active_time.total" => Kind::Fixed(Counter::ActiveMs),
        _ => return None,
    })
}

fn point(
    kind: Kind,
    p: &RawPoint,
    resource: &[(String, String)],
    cumulative: bool,
) -> Option<Point> {
    let attr = |k: &str| {
        p.attributes
            .iter()
            .chain(resource)
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let session = attr("session.id").filter(|s| valid_session(s))?.to_string();
    let counter = match kind {
        Kind::Fixed(c) => c,
        Kind::Lines => match attr("type")? {
            "added" => Counter::LinesAdded,
            "removed" => Counter::LinesRemoved,
            _ => return None,
        },
    };
    if !(p.value.is_finite() && p.value >= 0.0 && p.value <= MAX_VALUE) {
        return None;
    }
    let scaled = match counter {
        Counter::ActiveMs => p.value * 1000.0,
        _ => p.value,
    };
    Some(Point {
        session,
        counter,
        series: series(&p.attributes),
        // In range and non-negative (checked above), so the cast neither wraps nor saturates.
        value: scaled.round() as u64,
        cumulative,
    })
}

/// The same rule as the proxy's session headers: 1 to 200 visible ASCII characters.
fn valid_session(s: &str) -> bool {
    !s.is_empty() && s.len() <= 200 && s.bytes().all(|b| b.is_ascii_graphic())
}

/// A digest of a point's attributes, order-independent: its time series' identity.
fn series(attributes: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = attributes.iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    for (k, v) in sorted {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests;
