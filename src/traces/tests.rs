use super::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message as _;

fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |k| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

#[test]
fn the_standard_variables_configure_the_export() {
    assert_eq!(config(vars(&[])), None, "nothing without an endpoint");
    let c = config(vars(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20abc, x-team = ops,bad",
        ),
        ("OTEL_SERVICE_NAME", "proxy-eu"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=prod,service.name=ignored",
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
    ]))
    .unwrap();
    assert_eq!(c.endpoint, "http://127.0.0.1:4318/v1/traces");
    assert_eq!(
        c.headers,
        vec![
            ("authorization".into(), "Bearer abc".into()),
            ("x-team".into(), "ops".into())
        ]
    );
    assert_eq!(c.timeout, Duration::from_millis(2500));
    assert!(
        c.resource
            .contains(&("service.name".into(), Value::Text("proxy-eu".into())))
    );
    assert!(
        c.resource
            .contains(&("deployment.environment".into(), Value::Text("prod".into())))
    );
    assert_eq!(
        c.resource
            .iter()
            .filter(|(k, _)| k == "service.name")
            .count(),
        1
    );
    let traces_only = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:9999/traces"),
    ];
    assert_eq!(
        config(vars(&traces_only)).unwrap().endpoint,
        "http://b:9999/traces"
    );
    for off in [
        ("OTEL_SDK_DISABLED", "true"),
        ("OTEL_TRACES_EXPORTER", "none"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ] {
        let v = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"), off];
        assert_eq!(config(vars(&v)), None, "{off:?}");
    }
}

#[test]
fn a_traceparent_is_read_or_ignored() {
    let p = parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    assert_eq!(hex::encode(p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex::encode(p.span_id), "00f067aa0ba902b7");
    for bad in [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01",
    ] {
        assert_eq!(parent(bad), None, "{bad}");
    }
}

#[test]
fn spans_decode_as_the_official_protobuf_says() {
    let span = Span {
        trace_id: [7; 16],
        span_id: [9; 8],
        parent_span_id: Some([3; 8]),
        name: "chat claude-haiku-4-5".into(),
        kind: CLIENT,
        start_unix_nano: 1_700_000_000_000_000_000,
        end_unix_nano: 1_700_000_000_250_000_000,
        attributes: vec![
            (
                "gen_ai.request.model",
                Value::Text("claude-haiku-4-5".into()),
            ),
            ("gen_ai.usage.input_tokens", Value::Int(1234)),
            ("agent_budget.cost", Value::Float(0.5)),
        ],
        error: true,
    };
    let resource = [(
        "service.name".to_string(),
        Value::Text("agent-budget".into()),
    )];
    let body = wire::export(&resource, &[span.clone(), span]);
    let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
    let rs = &req.resource_spans[0];
    let service = &rs.resource.as_ref().unwrap().attributes[0];
    assert_eq!(service.key, "service.name");
    let ss = &rs.scope_spans[0];
    assert_eq!(ss.scope.as_ref().unwrap().name, "agent-budget");
    assert_eq!(ss.spans.len(), 2);
    let s = &ss.spans[0];
    assert_eq!(
        (s.trace_id.as_slice(), s.span_id.as_slice()),
        (&[7u8; 16][..], &[9u8; 8][..])
    );
    assert_eq!(s.parent_span_id, vec![3u8; 8]);
    assert_eq!((s.name.as_str(), s.kind), ("chat claude-haiku-4-5", 3));
    assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 250_000_000);
    assert_eq!(s.status.as_ref().unwrap().code, 2);
    let attr = |k: &str| {
        s.attributes
            .iter()
            .find(|a| a.key == k)
            .unwrap()
            .value
            .clone()
            .unwrap()
            .value
            .unwrap()
    };
    assert_eq!(
        attr("gen_ai.request.model"),
        any_value::Value::StringValue("claude-haiku-4-5".into())
    );
    assert_eq!(
        attr("gen_ai.usage.input_tokens"),
        any_value::Value::IntValue(1234)
    );
    assert_eq!(
        attr("agent_budget.cost"),
        any_value::Value::DoubleValue(0.5)
    );
}
