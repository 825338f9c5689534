//! Request guards for every route: the `Host` check (DNS rebinding), the `Origin` check on
//! mutations (CSRF from web pages), admin authentication on `/api/*`, and no admin token as
//! a proxy credential.

use crate::admin::Admin;
use crate::config::{BASE_PATH, Config};
use crate::error::HttpError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// What the guards need, precomputed once.
/// Marks a request made inside the process by the app that owns it (the desktop app's
/// dashboard, `RunningServer::call`): it is the admin. Extensions never come over the wire.
#[derive(Clone, Copy, Debug)]
pub struct InProcess;

#[derive(Clone, Debug)]
pub struct Policy {
    allowed_hosts: Vec<String>,
    admin: Arc<Admin>,
    /// `--open-metrics`: `/agent-budget/metrics` without the admin token.
    open_metrics: bool,
}

impl Policy {
    pub fn new(c: &Config, admin: Arc<Admin>) -> Policy {
        Policy {
            allowed_hosts: c.allowed_hosts.clone(),
            admin,
            open_metrics: c.open_metrics,
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

fn host_of(req: &Request) -> Option<String> {
    let h: &HeaderMap = req.headers();
    h.get("host")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

/// Routes under the base path that go upstream.
fn is_proxied(rest: &str) -> bool {
    rest.starts_with("/v1/") || (rest.starts_with("/b/") && rest.contains("/v1/"))
}

/// Whether the route is the admin API: every `/api/*` but Claude Code's probe and the
/// embeddable badge (PRODUCT.md §12).
fn needs_admin(method: &Method, rest: &str, open_metrics: bool) -> bool {
    if rest == "/metrics" {
        return !open_metrics;
    }
    let Some(api) = rest.strip_prefix("/api/") else {
        return false;
    };
    // `oauth/usage` authenticates by the virtual key it describes, never the admin token.
    let open = api == "hello"
        || api == "oauth/usage"
        || (method == Method::GET
            && api.starts_with("budgets/")
            && api.ends_with("/badge")
            && api.matches('/').count() == 2);
    !open
}

/// Whether any credential header holds the admin token.
fn carries_admin_token(admin: &Admin, h: &HeaderMap) -> bool {
    let key = h.get_all("x-api-key").iter();
    let auth = h.get_all("authorization").iter();
    key.chain(auth).filter_map(|v| v.to_str().ok()).any(|v| {
        let token = v.split_once(' ').map_or(v, |(_, t)| t);
        admin.is_token(token) || admin.is_token(v)
    })
}

pub async fn check(State(policy): State<Arc<Policy>>, req: Request, next: Next) -> Response {
    if req.extensions().get::<InProcess>().is_some() {
        return next.run(req).await;
    }
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
    let Some(rest) = path.strip_prefix(BASE_PATH) else {
        return next.run(req).await;
    };
    if is_proxied(rest) && carries_admin_token(&policy.admin, req.headers()) {
        return HttpError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "agent-budget: the admin token is not an API key and is never forwarded; send your Anthropic key or a virtual key (sk-ab-…)",
        )
        .into_response();
    }
    if needs_admin(req.method(), rest, policy.open_metrics) && !policy.admin.allows(req.headers()) {
        return HttpError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "agent-budget: this API needs the admin token: send 'Authorization: Bearer <token>' (the token is in <data-dir>/admin-token, or the value of --admin-token), or sign the dashboard in with the link `agent-budget dashboard` prints",
        )
        .into_response();
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
            admin: Arc::new(Admin::new(None)),
            open_metrics: false,
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

    #[test]
    fn the_admin_api_is_every_api_route_but_the_probe_and_the_badge() {
        for (method, rest, admin) in [
            (Method::GET, "/api/budgets", true),
            (Method::GET, "/api/settings", true),
            (Method::GET, "/api/events", true),
            (Method::POST, "/api/budgets/x/keys", true),
            (Method::GET, "/api/budgets/x/badge", false),
            (Method::POST, "/api/budgets/x/badge", true),
            (Method::GET, "/api/budgets/x/keys/badge", true),
            (Method::HEAD, "/api/hello", false),
            (Method::GET, "/health", false),
            (Method::GET, "/", false),
            (Method::POST, "/v1/messages", false),
            (Method::GET, "/metrics", true),
        ] {
            assert_eq!(needs_admin(&method, rest, false), admin, "{method} {rest}");
        }
        assert!(
            !needs_admin(&Method::GET, "/metrics", true),
            "--open-metrics"
        );
        assert!(needs_admin(&Method::GET, "/api/budgets", true));
        assert!(is_proxied("/v1/messages") && is_proxied("/b/team/v1/models"));
        assert!(!is_proxied("/api/budgets") && !is_proxied("/b/x"));
    }
}
