//! The dashboard's files, embedded in the binary and served under `/agent-budget/`.
//! Hashed assets are cached for a year; everything else is revalidated. The app routes with
//! the URL fragment, so a path-style link (`/agent-budget/budgets/team`) is redirected to its
//! fragment form (`/agent-budget/#/budgets/team`).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

#[derive(rust_embed::Embed)]
#[folder = "ui/dist/"]
struct Dist;

fn mime(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The dashboard runs only its own scripts, talks only to this server (images: also the
/// badge, which it links by the server's `localhost` address), and cannot be framed
/// by another page (a frame would let that page trick clicks past the Origin check).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: http://localhost:* http://127.0.0.1:*; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; object-src 'none'";

fn serve(path: &str) -> Option<Response> {
    let file = Dist::get(path)?;
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Some(
        (
            [
                (header::CONTENT_TYPE, mime(path)),
                (header::CACHE_CONTROL, cache),
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::X_FRAME_OPTIONS, "DENY"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            file.data.into_owned(),
        )
            .into_response(),
    )
}

pub async fn index() -> Response {
    serve("index.html").unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

pub async fn root() -> Redirect {
    Redirect::permanent("/agent-budget/")
}

pub async fn file(Path(path): Path<String>) -> Response {
    if let Some(r) = serve(&path) {
        return r;
    }
    // A missing hashed asset or API path is a real 404; any other path is a page of the app.
    if path.starts_with("assets/") || path.starts_with("api/") {
        return crate::error::HttpError::not_found(format!("agent-budget: no file {path}"))
            .into_response();
    }
    Redirect::to(&format!("/agent-budget/#/{path}")).into_response()
}
