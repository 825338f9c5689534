//! Forwarding to the upstream: which headers cross, and how transport failures become
//! `502 api_error` / `504 timeout_error`.

use crate::error::HttpError;
use crate::service::Service;
use crate::upstream::SendError;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
];

fn is_hop_by_hop(name: &HeaderName, listed: &[String]) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || listed.iter().any(|l| l == name.as_str())
}

/// Names listed in a `Connection` header, which are hop-by-hop too.
fn connection_listed(h: &HeaderMap) -> Vec<String> {
    h.get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect()
}

/// The client's headers as sent upstream: everything but hop-by-hop headers, `Host`,
/// `Content-Length` (recomputed), `X-Budget-Id` (ours), and `Accept-Encoding`, which becomes
/// `identity` so the usage in the response can be read.
pub fn request_headers(src: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(src);
    let mut out = HeaderMap::with_capacity(src.len());
    for (k, v) in src {
        let skip = is_hop_by_hop(k, &listed)
            || k == "host"
            || k == "content-length"
            || k == "x-budget-id"
            || k == super::SESSION_HEADER
            || k == "accept-encoding"
            || k == "proxy-authorization"
            // Cookies are the dashboard's (sent only to /api, but never forwarded either way).
            || k == "cookie"
            // A virtual key never leaves the proxy, whatever header carries it.
            || crate::service::keys::carries_virtual_key(v.as_bytes());
        if !skip {
            out.append(k.clone(), v.clone());
        }
    }
    out.insert("accept-encoding", HeaderValue::from_static("identity"));
    out
}

/// The upstream's response headers as sent to the client (hop-by-hop and length removed;
/// the length is recomputed for the body we send).
pub fn response_headers(src: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(src);
    let mut out = HeaderMap::with_capacity(src.len() + 2);
    for (k, v) in src {
        if !is_hop_by_hop(k, &listed) && k != "content-length" {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

/// Sends a request upstream and waits for its response headers.
pub async fn send(
    app: &Service,
    method: Method,
    path_and_query: &str,
    headers: HeaderMap,
    body: Option<Bytes>,
) -> Result<Response<Incoming>, HttpError> {
    let mut req = Request::new(Full::new(body.unwrap_or_default()));
    *req.method_mut() = method;
    *req.headers_mut() = headers;
    let timeout = app.config.upstream_timeout;
    match tokio::time::timeout(timeout, app.upstream.send(req, path_and_query)).await {
        Err(_) => Err(timed_out(timeout)),
        Ok(Err(SendError::Path(e))) => Err(HttpError::invalid(format!("agent-budget: {e}"))),
        Ok(Err(e)) if is_timeout(&e) => Err(timed_out(timeout)),
        Ok(Err(e)) => Err(unreachable(&app.config.upstream, &e)),
        Ok(Ok(r)) => Ok(r),
    }
}

/// The largest non-streamed response the proxy reads: a Messages reply is at most a few MB
/// (128K output tokens, server-tool results), so this bounds a request's memory whatever the
/// upstream sends (docs/RELIABILITY.md).
pub const RESPONSE_LIMIT: usize = 32 * 1024 * 1024;

/// Reads a whole response body within the upstream timeout and `RESPONSE_LIMIT`.
pub async fn read_all(app: &Service, body: Incoming) -> Result<Bytes, HttpError> {
    let timeout = app.config.upstream_timeout;
    let limited = http_body_util::Limited::new(body, RESPONSE_LIMIT);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(HttpError::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            format!(
                "agent-budget: the upstream's response is larger than {RESPONSE_LIMIT} bytes, more than any Messages response; it was not relayed"
            ),
        )),
        Ok(Err(e)) => Err(unreachable(&app.config.upstream, e.as_ref())),
        Err(_) => Err(timed_out(timeout)),
    }
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src = Some(e);
    while let Some(s) = src {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        src = s.source();
    }
    false
}

pub fn timed_out(t: std::time::Duration) -> HttpError {
    HttpError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout_error",
        format!(
            "agent-budget: the upstream did not answer within {} s (--upstream-timeout)",
            t.as_secs()
        ),
    )
}

/// `502`, naming the innermost cause (say, "Connection refused").
pub fn unreachable(upstream: &str, e: &(dyn std::error::Error + 'static)) -> HttpError {
    let mut cause = String::new();
    let mut src = Some(e);
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    HttpError::new(
        StatusCode::BAD_GATEWAY,
        "api_error",
        format!("agent-budget: cannot reach the upstream {upstream}: {cause}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_and_budget_headers_are_dropped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-api-key", "sk"),
            ("authorization", "Bearer t"),
            ("anthropic-version", "2026-10-21"),
            ("anthropic-beta", "a,b"),
            ("x-budget-id", "team"),
            ("host", "localhost:4727"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("content-length", "10"),
            ("accept-encoding", "gzip, br"),
            ("x-stainless-retry-count", "0"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        let out = request_headers(&h);
        for kept in [
            "x-api-key",
            "authorization",
            "anthropic-version",
            "anthropic-beta",
            "x-stainless-retry-count",
        ] {
            assert_eq!(out.get(kept), h.get(kept), "{kept}");
        }
        for gone in [
            "x-budget-id",
            "host",
            "connection",
            "x-private",
            "content-length",
        ] {
            assert!(out.get(gone).is_none(), "{gone}");
        }
        assert_eq!(out.get("accept-encoding").unwrap(), "identity");
    }
}
