//! Signing the dashboard in: one-time links (`GET /sign-in?code=…`), the admin token typed into
//! the dashboard (`POST /sign-in`), new links for `agent-budget dashboard` and the tray
//! (`POST /api/sign-in-links`), and signing out.

use crate::admin::{clear_cookie, set_cookie};
use crate::error::HttpError;
use crate::service::Service;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

type App = State<Arc<Service>>;

/// `POST /api/sign-in-links` → `{ url }`: a link that signs one browser in, once, within
/// five minutes.
#[derive(Serialize)]
pub struct SignInLink {
    pub url: String,
}

/// A new one-time sign-in URL for this server (the tray, `serve`'s start-up line, and
/// `agent-budget dashboard` use it).
pub fn new_link(app: &Service) -> Result<String, HttpError> {
    new_link_to(app, None)
}

/// A sign-in URL that goes on to `next` (a path of this server, such as a CSV export) once
/// the browser is signed in: the desktop app opens its downloads this way.
pub fn new_link_to(app: &Service, next: Option<&str>) -> Result<String, HttpError> {
    let code = app.admin.new_link().map_err(|e| {
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            format!("agent-budget: no randomness for a sign-in link: {e}"),
        )
    })?;
    let base = app.base_url.get().map(String::as_str).unwrap_or_default();
    let mut url = reqwest::Url::parse(&format!("{base}/sign-in")).map_err(|e| {
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            format!("agent-budget: the server's address is not known yet ({e}); try again"),
        )
    })?;
    url.query_pairs_mut().append_pair("code", &code);
    if let Some(n) = next.filter(|n| local_path(n)) {
        url.query_pairs_mut().append_pair("next", n);
    }
    Ok(url.into())
}

/// A path of this server's own pages or API, never another site (no open redirect).
fn local_path(p: &str) -> bool {
    p.starts_with("/agent-budget/")
        && !p.contains("//")
        && !p.contains('\\')
        && p.bytes().all(|b| b.is_ascii_graphic())
}

pub async fn create_link(State(app): App) -> Result<Json<SignInLink>, HttpError> {
    Ok(Json(SignInLink {
        url: new_link(&app)?,
    }))
}

/// Says the session is on: the cookie, and the dashboard to go to.
fn signed_in(session: String, status: StatusCode) -> Response {
    let mut r = (status, [(header::SET_COOKIE, set_cookie(&session))]).into_response();
    if status == StatusCode::SEE_OTHER {
        r.headers_mut().insert(
            header::LOCATION,
            header::HeaderValue::from_static("/agent-budget/"),
        );
    }
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

fn refused(msg: &str) -> Response {
    HttpError::new(StatusCode::UNAUTHORIZED, "authentication_error", msg).into_response()
}

#[derive(Deserialize)]
struct SignInQuery {
    #[serde(default)]
    code: String,
    next: Option<String>,
}

/// `GET /sign-in?code=…[&next=…]`: a one-time link from the tray, `serve` or
/// `agent-budget dashboard`; goes on to `next` (a local path) or the dashboard.
pub async fn redeem(State(app): App, uri: Uri) -> Response {
    let (code, next) = match Query::<SignInQuery>::try_from_uri(&uri) {
        Ok(Query(q)) => (q.code, q.next.filter(|n| local_path(n))),
        Err(_) => (String::new(), None),
    };
    match app.admin.redeem(&code) {
        Some(session) => {
            let mut r = signed_in(session, StatusCode::SEE_OTHER);
            if let Some(v) = next.and_then(|n| header::HeaderValue::from_str(&n).ok()) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        None => refused(
            "agent-budget: this sign-in link was used already or has expired (links work once, for five minutes); open a new one with the tray's Open dashboard or `agent-budget dashboard`",
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenSignIn {
    token: String,
}

/// `POST /sign-in { token }`: the admin token typed into the dashboard's sign-in form.
pub async fn with_token(State(app): App, body: Bytes) -> Response {
    let Ok(input) = serde_json::from_slice::<TokenSignIn>(&body) else {
        return HttpError::invalid(
            "the request body must be a JSON object {\"token\": \"<the admin token>\"}",
        )
        .into_response();
    };
    if !app.admin.is_token(&input.token) {
        return refused(
            "agent-budget: that is not the admin token (it is in <data-dir>/admin-token)",
        );
    }
    match app.admin.new_session() {
        Some(session) => signed_in(session, StatusCode::NO_CONTENT),
        None => refused("agent-budget: no randomness for a session; try again"),
    }
}

/// `POST /api/sign-out`: ends this browser's session.
pub async fn sign_out(State(app): App, headers: HeaderMap) -> Response {
    app.admin.end_session(&headers);
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, clear_cookie())],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_a_local_path_or_nothing() {
        for ok in [
            "/agent-budget/",
            "/agent-budget/api/budgets/a%20b/usage.csv",
        ] {
            assert!(local_path(ok), "{ok}");
        }
        for bad in [
            "https://evil.example/",
            "//evil.example/x",
            "/agent-budget//evil",
            "/other",
            "/agent-budget/\\x",
            "/agent-budget/a b",
        ] {
            assert!(!local_path(bad), "{bad}");
        }
    }
}
