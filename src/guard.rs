//! Request guards for every route: the `Host` check (DNS rebinding), the `Origin` check on
//! mutations (CSRF from web pages), and the admin token on `/api/*`.

use crate::config::{BASE_PATH, Config};
use crate::error::HttpError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// What the guards need, precomputed once.
#[derive(Clone, Debug)]
pub struct Policy {
    allowed_hosts: Vec<String>,
    admin_token: Option<String>,
}

impl Policy {
    pub fn new(c: &Config) -> Policy {
        Policy {
            allowed_hosts: c.allowed_hosts.clone(),
            admin_token: c.admin_token.clone(),
        }
    }

    /// Loopback names and addresses, and the configured extra names.
    fn host_allowed(&self, host_port: &str) -> bool {
        let host = strip_port(host_port).to_ascii_lowercase();
        let loopback = host == "localhost"
            || host.ends_with(".localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        loopback || self.allowed_hosts.contains(&host)
    }
}

fn strip_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match h.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => h,
    }
}

fn origin_host(origin: &str) -> Option<&str> {
    let rest = origin.split_once("://")?.1;
    Some(rest.split('/').next().unwrap_or(rest))
}

fn forbidden(msg: String) -> Response {
    HttpError::new(StatusCode::FORBIDDEN, "permission_error", msg).into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn host_of(req: &Request) -> Option<String> {
    let h: &HeaderMap = req.headers();
    h.get("host")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

pub async fn check(State(policy): State<Arc<Policy>>, req: Request, next: Next) -> Response {
    let host = host_of(&req);
    if !host.as_deref().is_some_and(|h| policy.host_allowed(h)) {
        return forbidden(format!(
            "agent-budget: requests for host '{}' are refused (DNS rebinding protection); use localhost, or start the server with --allowed-host <name>",
            host.unwrap_or_default()
        ));
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if let Some(origin) = req.headers().get("origin") {
            let o = origin.to_str().unwrap_or("");
            if !origin_host(o).is_some_and(|h| policy.host_allowed(h)) {
                return forbidden(format!(
                    "agent-budget: {} from origin '{o}' refused: only pages served from localhost may change things here",
                    req.method()
                ));
            }
        }
    }
    let path = req.uri().path();
    let is_api = path
        .strip_prefix(BASE_PATH)
        .is_some_and(|p| p.starts_with("/api/"))
        && !path.ends_with("/api/hello");
    if let (true, Some(token)) = (is_api, &policy.admin_token) {
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.trim().as_bytes(), token.as_bytes())) {
            return HttpError::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "agent-budget: this API needs the admin token: send 'Authorization: Bearer <token>' (the value of --admin-token)",
            )
            .into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let p = Policy {
            allowed_hosts: vec!["budget.internal".into()],
            admin_token: None,
        };
        for ok in [
            "localhost",
            "localhost:4727",
            "127.0.0.1:4727",
            "127.1.2.3",
            "[::1]:4727",
            "[::1]",
            "app.localhost:1",
            "budget.internal:4727",
            "LOCALHOST",
        ] {
            assert!(p.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:4727",
            "127.0.0.1.evil.com",
            "10.0.0.1:4727",
            "",
            "localhost.evil.com",
            "[::2]:80",
        ] {
            assert!(!p.host_allowed(bad), "{bad}");
        }
        assert_eq!(origin_host("http://localhost:5173"), Some("localhost:5173"));
        assert_eq!(origin_host("null"), None);
    }
}
