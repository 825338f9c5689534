//! One OpenTelemetry span per proxied request (docs/metrics.md), from its usage record: the
//! GenAI semantic conventions' attributes and the budget's, never a prompt, answer or key.

use super::Service;
use crate::record::{UsageRow, UsageStatus};
use crate::traces::{self, Span, Value};

/// What a span needs beyond the record: the trace it belongs to and what was asked.
#[derive(Clone, Debug)]
pub struct Request {
    pub parent: Option<traces::Parent>,
    pub model: String,
    pub max_tokens: u64,
    /// `admitted`, `clamped` or `refused`.
    pub decision: &'static str,
    /// What refused it, if it was.
    pub refused_by: Option<&'static str>,
}

impl Service {
    /// Whether spans are exported (then requests gather what their span needs).
    pub fn tracing(&self) -> bool {
        self.traces.is_some()
    }

    /// Sends the spans still queued (at exit: the batcher would otherwise go with the runtime
    /// before its batch's linger is over).
    pub async fn flush_spans(&self) {
        if let Some(exporter) = &self.traces
            && !exporter.flush(std::time::Duration::from_secs(5)).await
        {
            tracing::warn!("spans not all sent to the OTLP collector before exit");
        }
    }

    /// Exports the span of a request charged to `budget`, as `row` records it.
    pub fn trace(&self, budget: &str, row: &UsageRow, req: Request) {
        let Some(exporter) = &self.traces else { return };
        let (trace_id, span_id) = traces::random_ids();
        let end = row.created_at.timestamp_nanos_opt().unwrap_or(0).max(0) as u64;
        let start = end.saturating_sub(row.duration_ms.saturating_mul(1_000_000));
        let t = &row.tokens;
        let cache_write = t.cache_write_5m.saturating_add(t.cache_write_1h);
        // The conventions count cache reads and writes as input; Anthropic's input excludes them.
        let input = t
            .input
            .saturating_add(t.cache_read)
            .saturating_add(cache_write);
        let int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
        let mut attributes = vec![
            ("gen_ai.operation.name", Value::Text("chat".into())),
            ("gen_ai.provider.name", Value::Text("anthropic".into())),
            ("gen_ai.system", Value::Text("anthropic".into())),
            ("gen_ai.request.model", Value::Text(req.model.clone())),
            ("gen_ai.response.model", Value::Text(row.model.clone())),
            (
                "gen_ai.request.max_tokens",
                int(row.clamped_max_tokens.unwrap_or(req.max_tokens)),
            ),
            ("gen_ai.usage.input_tokens", int(input)),
            ("gen_ai.usage.output_tokens", int(t.output)),
            ("gen_ai.usage.cache_read.input_tokens", int(t.cache_read)),
            ("gen_ai.usage.cache_creation.input_tokens", int(cache_write)),
            ("http.response.status_code", int(u64::from(row.http_status))),
            ("agent_budget.budget", Value::Text(budget.to_string())),
            ("agent_budget.decision", Value::Text(req.decision.into())),
            (
                "agent_budget.outcome",
                Value::Text(row.status.as_str().into()),
            ),
            (
                "agent_budget.cost_dollars",
                Value::Text(row.cost.to_string()),
            ),
            (
                "agent_budget.worst_case_dollars",
                Value::Text(row.worst_case.to_string()),
            ),
        ];
        if let Some(by) = req.refused_by {
            attributes.push(("agent_budget.refused_by", Value::Text(by.into())));
        }
        if let Some(id) = &row.upstream_request_id {
            attributes.push(("anthropic.request_id", Value::Text(id.clone())));
        }
        exporter.record(Span {
            trace_id: req.parent.map_or(trace_id, |p| p.trace_id),
            span_id,
            parent_span_id: req.parent.map(|p| p.span_id),
            name: format!("chat {}", req.model),
            kind: traces::CLIENT,
            start_unix_nano: start,
            end_unix_nano: end,
            attributes,
            error: row.status != UsageStatus::Ok,
        });
    }
}
