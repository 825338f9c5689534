//! OTLP metrics in JSON (the protobuf JSON mapping: lowerCamelCase names, the proto's own
//! names also accepted; 64-bit integers as strings or numbers).

use super::{Metric, OtlpError, RawPoint};
use serde_json::Value;

type Resource = (Vec<(String, String)>, Vec<Metric>);

/// The field `camel` (or its proto name `snake`) of an object.
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

fn list<'a>(v: &'a Value, camel: &str, snake: &str) -> &'a [Value] {
    field(v, camel, snake)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

pub(super) fn resources(body: &[u8]) -> Result<Vec<Resource>, OtlpError> {
    let root: Value = serde_json::from_slice(body).map_err(|e| OtlpError::Json(e.to_string()))?;
    Ok(list(&root, "resourceMetrics", "resource_metrics")
        .iter()
        .map(|r| {
            let attributes = field(r, "resource", "resource")
                .map(attributes)
                .unwrap_or_default();
            let metrics = list(r, "scopeMetrics", "scope_metrics")
                .iter()
                .flat_map(|s| list(s, "metrics", "metrics"))
                .map(metric)
                .collect();
            (attributes, metrics)
        })
        .collect())
}

fn metric(m: &Value) -> Metric {
    let (data, temporality) = match (m.get("sum"), m.get("gauge")) {
        (Some(sum), _) => (Some(sum), temporality(sum)),
        (None, gauge) => (gauge, None),
    };
    Metric {
        name: m
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        temporality,
        points: data
            .map(|d| list(d, "dataPoints", "data_points"))
            .unwrap_or_default()
            .iter()
            .filter_map(point)
            .collect(),
    }
}

fn temporality(sum: &Value) -> Option<u64> {
    match field(sum, "aggregationTemporality", "aggregation_temporality")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if s == "AGGREGATION_TEMPORALITY_DELTA" => Some(1),
        Value::String(s) if s == "AGGREGATION_TEMPORALITY_CUMULATIVE" => Some(2),
        _ => None,
    }
}

fn point(p: &Value) -> Option<RawPoint> {
    let value = match (
        field(p, "asDouble", "as_double"),
        field(p, "asInt", "as_int"),
    ) {
        (Some(d), _) => d.as_f64()?,
        (None, Some(Value::String(s))) => s.parse::<i64>().ok()? as f64,
        (None, Some(i)) => i.as_i64()? as f64,
        (None, None) => return None,
    };
    Some(RawPoint {
        attributes: attributes(p),
        value,
    })
}

/// String, bool, int and double attributes, as strings; others are skipped.
fn attributes(v: &Value) -> Vec<(String, String)> {
    list(v, "attributes", "attributes")
        .iter()
        .filter_map(|kv| {
            let key = kv.get("key")?.as_str()?.to_string();
            let any = kv.get("value")?;
            let value = if let Some(s) = field(any, "stringValue", "string_value") {
                s.as_str()?.to_string()
            } else if let Some(b) = field(any, "boolValue", "bool_value") {
                b.as_bool()?.to_string()
            } else if let Some(i) = field(any, "intValue", "int_value") {
                match i {
                    Value::String(s) => s.parse::<i64>().ok()?.to_string(),
                    _ => i.as_i64()?.to_string(),
                }
            } else {
                field(any, "doubleValue", "double_value")?
                    .as_f64()?
                    .to_string()
            };
            Some((key, value))
        })
        .collect()
}
