//! OTLP's `ExportTraceServiceRequest` in protobuf, written by hand: the few fields a span of
//! ours has (opentelemetry/proto/trace/v1/trace.proto, common/v1, resource/v1).

use super::{Span, Value};

/// A protobuf message being written.
#[derive(Default)]
struct Message(Vec<u8>);

impl Message {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn tag(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.tag(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }
    fn message(&mut self, field: u32, m: Message) {
        self.bytes(field, &m.0);
    }
    fn fixed64(&mut self, field: u32, v: u64) {
        self.tag(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn uint(&mut self, field: u32, v: u64) {
        self.tag(field, 0);
        self.varint(v);
    }
}

/// `KeyValue { key = 1; AnyValue value = 2 }`, `AnyValue { string 1, bool 2, int 3, double 4 }`.
fn key_value(key: &str, value: &Value) -> Message {
    let mut any = Message::default();
    match value {
        Value::Text(s) => any.string(1, s),
        Value::Int(i) => any.uint(3, *i as u64),
        Value::Float(f) => any.fixed64(4, f.to_bits()),
    }
    let mut kv = Message::default();
    kv.string(1, key);
    kv.message(2, any);
    kv
}

fn span(s: &Span) -> Message {
    let mut m = Message::default();
    m.bytes(1, &s.trace_id);
    m.bytes(2, &s.span_id);
    if let Some(parent) = &s.parent_span_id {
        m.bytes(4, parent);
    }
    m.string(5, &s.name);
    m.uint(6, s.kind as u64);
    m.fixed64(7, s.start_unix_nano);
    m.fixed64(8, s.end_unix_nano);
    for (k, v) in &s.attributes {
        m.message(9, key_value(k, v));
    }
    if s.error {
        // Status { code = 3 }: STATUS_CODE_ERROR is 2.
        let mut status = Message::default();
        status.uint(3, 2);
        m.message(15, status);
    }
    m
}

/// The request body for `spans`, under one resource and the scope `agent-budget`.
pub fn export(resource: &[(String, Value)], spans: &[Span]) -> Vec<u8> {
    let mut res = Message::default();
    for (k, v) in resource {
        res.message(1, key_value(k, v));
    }
    let mut scope = Message::default();
    scope.string(1, "agent-budget");
    scope.string(2, env!("CARGO_PKG_VERSION"));
    let mut scope_spans = Message::default();
    scope_spans.message(1, scope);
    for s in spans {
        scope_spans.message(2, span(s));
    }
    let mut resource_spans = Message::default();
    resource_spans.message(1, res);
    resource_spans.message(2, scope_spans);
    let mut request = Message::default();
    request.message(1, resource_spans);
    request.0
}
