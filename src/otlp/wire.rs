//! OTLP metrics in protobuf: just enough of the wire format to read an
//! `ExportMetricsServiceRequest`'s sums and gauges (opentelemetry-proto's `metrics.proto`).
//! Unknown fields are skipped, as protobuf requires; nothing is read past a field's length.

use super::{Metric, OtlpError, RawPoint};

type Resource = (Vec<(String, String)>, Vec<Metric>);

/// A protobuf message's fields, one at a time.
struct Fields<'a> {
    rest: &'a [u8],
}

/// A field's value by wire type.
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

const MALFORMED: OtlpError = OtlpError::Protobuf("a field runs past the end of its message");

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Fields { rest: bytes }
    }

    fn varint(&mut self) -> Result<u64, OtlpError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.rest.split_first().ok_or(MALFORMED)?;
            self.rest = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(OtlpError::Protobuf("a varint is longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], OtlpError> {
        if n > self.rest.len() {
            return Err(MALFORMED);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    /// The next field's number and value, or None at the end.
    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, OtlpError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| MALFORMED)?;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed32
            }
            _ => {
                return Err(OtlpError::Protobuf(
                    "a field has a wire type OTLP does not use",
                ));
            }
        };
        Ok(Some((key >> 3, value)))
    }
}

/// Calls `f` with each field of a message, in order.
fn each<'a>(
    bytes: &'a [u8],
    mut f: impl FnMut(u64, Value<'a>) -> Result<(), OtlpError>,
) -> Result<(), OtlpError> {
    let mut fields = Fields::new(bytes);
    while let Some((n, v)) = fields.next_field()? {
        f(n, v)?;
    }
    Ok(())
}

pub(super) fn resources(body: &[u8]) -> Result<Vec<Resource>, OtlpError> {
    let mut out = Vec::new();
    each(body, |n, v| {
        if let (1, Value::Bytes(b)) = (n, v) {
            out.push(resource(b)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// `ResourceMetrics`: 1 resource (its 1 attributes), 2 scope metrics (their 2 metrics).
fn resource(bytes: &[u8]) -> Result<Resource, OtlpError> {
    let (mut attributes, mut metrics) = (Vec::new(), Vec::new());
    each(bytes, |n, v| {
        match (n, v) {
            (1, Value::Bytes(b)) => each(b, |n, v| {
                if let (1, Value::Bytes(kv)) = (n, v) {
                    attributes.extend(key_value(kv)?);
                }
                Ok(())
            })?,
            (2, Value::Bytes(b)) => each(b, |n, v| {
                if let (2, Value::Bytes(m)) = (n, v) {
                    metrics.push(metric(m)?);
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })?;
    Ok((attributes, metrics))
}

/// `Metric`: 1 name, 5 gauge, 7 sum (1 data points, 2 aggregation temporality).
fn metric(bytes: &[u8]) -> Result<Metric, OtlpError> {
    let mut m = Metric {
        name: String::new(),
        temporality: None,
        points: Vec::new(),
    };
    each(bytes, |n, v| {
        match (n, v) {
            (1, Value::Bytes(b)) => m.name = String::from_utf8_lossy(b).into_owned(),
            (5 | 7, Value::Bytes(b)) => each(b, |field, v| {
                match (field, v) {
                    (1, Value::Bytes(p)) => m.points.extend(number_point(p)?),
                    (2, Value::Varint(t)) if n == 7 => m.temporality = Some(t),
                    _ => {}
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(m)
}

/// `NumberDataPoint`: 7 attributes, 4 `as_double`, 6 `as_int` (sfixed64).
fn number_point(bytes: &[u8]) -> Result<Option<RawPoint>, OtlpError> {
    let (mut attributes, mut value) = (Vec::new(), None);
    each(bytes, |n, v| {
        match (n, v) {
            (7, Value::Bytes(kv)) => attributes.extend(key_value(kv)?),
            (4, Value::Fixed64(bits)) => value = Some(f64::from_bits(bits)),
            (6, Value::Fixed64(bits)) => value = Some(bits as i64 as f64),
            _ => {}
        }
        Ok(())
    })?;
    Ok(value.map(|value| RawPoint { attributes, value }))
}

/// `KeyValue` (1 key, 2 value) whose `AnyValue` is a string (1), bool (2), int (3) or double
/// (4); other values (arrays, maps, bytes) are not needed and skipped.
fn key_value(bytes: &[u8]) -> Result<Option<(String, String)>, OtlpError> {
    let (mut key, mut value) = (None, None);
    each(bytes, |n, v| {
        match (n, v) {
            (1, Value::Bytes(b)) => key = Some(String::from_utf8_lossy(b).into_owned()),
            (2, Value::Bytes(any)) => each(any, |n, v| {
                value = match (n, v) {
                    (1, Value::Bytes(s)) => Some(String::from_utf8_lossy(s).into_owned()),
                    (2, Value::Varint(b)) => Some((b != 0).to_string()),
                    (3, Value::Varint(i)) => Some((i as i64).to_string()),
                    (4, Value::Fixed64(bits)) => Some(f64::from_bits(bits).to_string()),
                    _ => value.take(),
                };
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(key.zip(value))
}
