//! Claude Code's sign-in endpoints (its gateway protocol: RFC 8414 discovery, RFC 8628 device
//! authorization and token, RFC 7009 revocation), and the admin's approval of a code. OAuth
//! answers use OAuth's error shape (`{"error", "error_description"}`); unknown form fields
//! are ignored, as the RFCs ask.

use super::App;
use crate::config::BASE_PATH;
use crate::error::HttpError;
use crate::service::Service;
use crate::service::sign_in::{ApproveSignIn, Client, Refused, SignInView};
use axum::Form;
use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// The base the client reached this server at (`http://<Host>/agent-budget`, or with
/// `/b/<budget>` after it when the client was set up for a budget): the protocol wants every
/// endpoint on that origin, under that base. The guard admitted the Host already.
fn base(headers: &HeaderMap, budget: Option<&str>) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    match budget {
        Some(b) => format!("http://{host}{BASE_PATH}/b/{b}"),
        None => format!("http://{host}{BASE_PATH}"),
    }
}

/// The budget a `/b/{budget}/…` path names: the one the sign-in is offered for.
type Hint = Option<Path<String>>;

fn hinted(hint: &Hint) -> Option<&str> {
    hint.as_ref().map(|Path(b)| b.as_str()).filter(|b| {
        !b.is_empty() && b.len() <= 64 && b.bytes().all(|c| c.is_ascii_graphic() && c != b'/')
    })
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

fn refused(r: &Refused) -> Response {
    let (error, description) = r.code();
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
    oauth_error(status, error, description)
}

/// Claude Code's gateway endpoints under `/agent-budget`, and again under a base set up for a
/// budget (`/agent-budget/b/{budget}`); the admin's sign-in approval; the verification page.
pub fn routes() -> Router<Arc<Service>> {
    let mut r = Router::new()
        .route("/agent-budget/device", get(device))
        .route("/agent-budget/api/sign-ins", get(pending))
        .route("/agent-budget/api/sign-ins/{code}/approve", post(approve))
        .route("/agent-budget/api/sign-ins/{code}/deny", post(deny));
    for base in ["/agent-budget", "/agent-budget/b/{budget}"] {
        r = r
            .route(
                &format!("{base}/.well-known/oauth-authorization-server"),
                get(discovery),
            )
            .route(
                &format!("{base}/oauth/device_authorization"),
                post(device_authorization),
            )
            .route(&format!("{base}/oauth/token"), post(token))
            .route(&format!("{base}/oauth/revoke"), post(revoke))
            .route(&format!("{base}/api/oauth/usage"), get(super::oauth_usage))
            .route(
                &format!("{base}/managed/settings"),
                get(super::no_managed_settings),
            );
    }
    r
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414).
pub async fn discovery(hint: Hint, headers: HeaderMap) -> Response {
    let base = base(&headers, hinted(&hint));
    let body = json!({
        "issuer": base,
        "device_authorization_endpoint": format!("{base}/oauth/device_authorization"),
        "token_endpoint": format!("{base}/oauth/token"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "grant_types_supported": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
    });
    Json(body).into_response()
}

/// `POST /oauth/device_authorization` (RFC 8628 §3.1): a code for the admin to approve.
pub async fn device_authorization(
    axum::extract::State(app): App,
    hint: Hint,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let client = Client {
        surface: form.get("surface").map(String::as_str),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
        budget: hinted(&hint),
    };
    let started = match app.start_sign_in(client) {
        Ok(started) => started,
        Err(e) => return e.into_response(),
    };
    match started {
        Ok(code) => {
            let verify = format!("{}/device", base(&headers, None));
            let complete = format!("{verify}?user_code={}", code.user_code);
            let body = json!({
                "device_code": code.device_code,
                "user_code": code.user_code,
                "verification_uri": verify,
                "verification_uri_complete": complete,
                "expires_in": code.expires_in,
                "interval": code.interval,
                "login_notice": "Approve this code in agent-budget's dashboard and choose the budget it spends.",
            });
            ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
        }
        Err(r) => refused(&r),
    }
}

/// `POST /oauth/token`: the device grant (RFC 8628 §3.4) and the refresh grant.
pub async fn token(
    axum::extract::State(app): App,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    const DEVICE: &str = "urn:ietf:params:oauth:grant-type:device_code";
    let field = |name: &str| form.get(name).filter(|v| !v.is_empty() && v.len() <= 200);
    let granted = match form.get("grant_type").map(String::as_str) {
        Some(DEVICE) => match field("device_code") {
            Some(code) => app.poll_sign_in(code),
            None => return missing("device_code"),
        },
        Some("refresh_token") => match field("refresh_token") {
            Some(token) => app.refresh_sign_in(token).await,
            None => return missing("refresh_token"),
        },
        Some(_) => Err(Refused::UnsupportedGrant),
        None => return missing("grant_type"),
    };
    match granted {
        Ok(token) => ([(header::CACHE_CONTROL, "no-store")], Json(token)).into_response(),
        Err(r) => refused(&r),
    }
}

fn missing(field: &str) -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        &format!(
            "the form needs {field}: grant_type urn:ietf:params:oauth:grant-type:device_code with the device_code, or refresh_token with the refresh_token"
        ),
    )
}

#[derive(Deserialize)]
pub struct Revocation {
    token: Option<String>,
}

/// `POST /oauth/revoke` (RFC 7009): the token stops working on every proxy; 200 whatever it
/// was, as the RFC asks.
pub async fn revoke(axum::extract::State(app): App, Form(form): Form<Revocation>) -> Response {
    let Some(token) = form.token.filter(|t| !t.is_empty() && t.len() <= 4096) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the form needs the token to revoke",
        );
    };
    match app.revoke_credential(&token).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub struct Code {
    user_code: Option<String>,
}

/// `GET /device?user_code=…` (the verification URI): the dashboard's page for the code, which
/// asks a browser without the dashboard's session to sign in first.
pub async fn device(axum::extract::Query(q): axum::extract::Query<Code>) -> Redirect {
    let code: String = q
        .user_code
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(16)
        .collect();
    Redirect::to(&format!("{BASE_PATH}/#/device?user_code={code}"))
}

/// `GET /api/sign-ins`: the sign-ins waiting for approval.
pub async fn pending(axum::extract::State(app): App) -> Json<crate::dto::Items<SignInView>> {
    Json(crate::dto::Items {
        items: app.pending_sign_ins(),
    })
}

/// `POST /api/sign-ins/{code}/approve` `{ "budget": … }`.
pub async fn approve(
    axum::extract::State(app): App,
    Path(code): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, HttpError> {
    let input: ApproveSignIn = super::parse(&body)?;
    app.approve_sign_in(&code, input).await?;
    Ok(Json(json!({"approved": true})))
}

/// `POST /api/sign-ins/{code}/deny`.
pub async fn deny(
    axum::extract::State(app): App,
    Path(code): Path<String>,
) -> Result<Json<serde_json::Value>, HttpError> {
    app.deny_sign_in(&code)?;
    Ok(Json(json!({"denied": true})))
}
