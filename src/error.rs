//! The one HTTP error shape, for the proxy and the REST API alike:
//! `{"type":"error","error":{"type":"…","message":"…"}}` — Anthropic's shape, which also
//! satisfies the REST contract's `{ "error": { "type", "message" } }`.

use crate::budget::Invalid;
use crate::pricing::PricingError;
use crate::store::StoreError;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Every error type the server answers with (Anthropic's names).
const KINDS: [&str; 10] = [
    "api_error",
    "authentication_error",
    "billing_error",
    "conflict_error",
    "invalid_request_error",
    "not_found_error",
    "overloaded_error",
    "permission_error",
    "timeout_error",
    "upstream_error",
];

#[derive(Debug, Clone)]
pub struct HttpError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl HttpError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            kind,
            message: message.into(),
            headers: Vec::new(),
        }
    }
    /// The error an answer of this server carries (`{"error": {"type", "message"}}`), read
    /// back (by the API called in-process).
    pub fn from_answer(status: StatusCode, body: &serde_json::Value) -> HttpError {
        let error = &body["error"];
        let kind = error["type"].as_str().unwrap_or_default();
        let kind = KINDS
            .into_iter()
            .find(|k| *k == kind)
            .unwrap_or("api_error");
        let message = error["message"].as_str().unwrap_or("the request failed");
        HttpError::new(status, kind, message.to_string())
    }

    pub fn invalid(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }
    pub fn not_found(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, "not_found_error", message)
    }
    pub fn with_header(mut self, name: &'static str, value: impl AsRef<str>) -> HttpError {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "error",
            "error": { "type": self.kind, "message": self.message },
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

impl From<Invalid> for HttpError {
    fn from(e: Invalid) -> HttpError {
        HttpError::invalid(e.to_string())
    }
}

impl From<PricingError> for HttpError {
    fn from(e: PricingError) -> HttpError {
        HttpError::invalid(e.to_string())
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> HttpError {
        match e {
            StoreError::Conflict(m) => HttpError::new(StatusCode::CONFLICT, "conflict_error", m),
            other => {
                tracing::error!(error = %other, "storage failure");
                HttpError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "api_error",
                    other.to_string(),
                )
            }
        }
    }
}
