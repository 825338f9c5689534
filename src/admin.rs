//! Admin authentication (PRODUCT.md §12): the admin token every `/api/*` request presents,
//! one-time sign-in links that give a browser a dashboard session (an HttpOnly, SameSite=Strict
//! cookie), and the sessions themselves. The threat model is in docs/security.md.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The admin token's file in the data directory (mode 0600).
pub const TOKEN_FILE: &str = "admin-token";
/// The dashboard session's cookie.
pub const COOKIE: &str = "agent_budget_session";
/// The path the session cookie is sent to: the API only, never a proxy route.
pub const COOKIE_PATH: &str = "/agent-budget/api";
/// How long a sign-in link can be used (once).
const LINK_TTL: Duration = Duration::from_secs(300);
/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// At most this many unused links and live sessions are kept; past it the oldest go.
const MAX_LINKS: usize = 64;
const MAX_SESSIONS: usize = 256;

/// The admin token, and the links and sessions it vouches for. `None` token: `--open-admin`.
#[derive(Debug)]
pub struct Admin {
    token: Option<String>,
    /// sha256 of each unused link code → when it expires.
    links: Mutex<HashMap<[u8; 32], Instant>>,
    /// sha256 of each session id → when it expires.
    sessions: Mutex<HashMap<[u8; 32], Instant>>,
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads `<dir>/admin-token`, creating it (64 hex characters, mode 0600) if it is missing
/// or unusable. A token written there by hand (16 characters or more) is kept.
pub fn load_or_create_token(dir: &Path) -> std::io::Result<String> {
    crate::secret_file::load_or_create(&dir.join(TOKEN_FILE), |t| {
        t.len() >= 16 && !t.chars().any(char::is_whitespace)
    })
}

/// Inserts `key` expiring at `until`, dropping expired entries and, past `max`, the oldest.
fn remember(map: &Mutex<HashMap<[u8; 32], Instant>>, key: [u8; 32], until: Instant, max: usize) {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    m.retain(|_, t| *t > now);
    while m.len() >= max {
        let Some(oldest) = m.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) else {
            break;
        };
        m.remove(&oldest);
    }
    m.insert(key, until);
}

impl Admin {
    pub fn new(token: Option<String>) -> Admin {
        Admin {
            token,
            links: Mutex::default(),
            sessions: Mutex::default(),
        }
    }

    /// Whether the API is open (`--open-admin`).
    pub fn is_open(&self) -> bool {
        self.token.is_none()
    }

    /// Whether `token` is the admin token.
    pub fn is_token(&self, token: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| constant_time_eq(token.trim().as_bytes(), t.as_bytes()))
    }

    /// A new one-time sign-in code (kept only as its hash).
    pub fn new_link(&self) -> std::io::Result<String> {
        let code = crate::secret_file::random_hex()?;
        remember(
            &self.links,
            digest(&code),
            Instant::now() + LINK_TTL,
            MAX_LINKS,
        );
        Ok(code)
    }

    /// Uses up a sign-in code: a new session id if it was valid, unused and unexpired.
    pub fn redeem(&self, code: &str) -> Option<String> {
        let until = self
            .links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&digest(code))?;
        (until > Instant::now())
            .then(|| self.new_session())
            .flatten()
    }

    /// A new dashboard session (for a valid link, or the admin token typed in).
    pub fn new_session(&self) -> Option<String> {
        let id = crate::secret_file::random_hex().ok()?;
        remember(
            &self.sessions,
            digest(&id),
            Instant::now() + SESSION_TTL,
            MAX_SESSIONS,
        );
        Some(id)
    }

    pub fn end_session(&self, headers: &HeaderMap) {
        if let Some(id) = session_cookie(headers) {
            self.sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&digest(id));
        }
    }

    /// Whether a request may use the admin API: open, the admin token as a bearer, or a live
    /// dashboard session's cookie.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        if self.is_open() {
            return true;
        }
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        if token.is_some_and(|t| self.is_token(t)) {
            return true;
        }
        session_cookie(headers).is_some_and(|id| {
            self.sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&digest(id))
                .is_some_and(|until| *until > Instant::now())
        })
    }
}

/// A bearer token, whatever the scheme's case (`Bearer`, `bearer`).
pub fn bearer(v: &str) -> Option<&str> {
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Our session id from the `Cookie` headers, if there is one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, v)| v.trim())
}

/// The `Set-Cookie` value that starts a session.
pub fn set_cookie(session: &str) -> String {
    format!(
        "{COOKIE}={session}; Path={COOKIE_PATH}; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that ends one.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path={COOKIE_PATH}; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: &'static str, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn links_are_single_use_and_sessions_are_checked() {
        let a = Admin::new(Some("0123456789abcdef0123".into()));
        assert!(!a.allows(&HeaderMap::new()));
        assert!(a.allows(&with("authorization", "Bearer 0123456789abcdef0123")));
        assert!(a.allows(&with("authorization", "bearer 0123456789abcdef0123")));
        assert!(!a.allows(&with("authorization", "Bearer 0123456789abcdef012")));
        let code = a.new_link().unwrap();
        let session = a.redeem(&code).unwrap();
        assert_eq!(a.redeem(&code), None, "a link works once");
        assert_eq!(a.redeem("nonsense"), None);
        let cookie = with("cookie", &format!("theme=dark; {COOKIE}={session}"));
        assert!(a.allows(&cookie));
        assert!(!a.allows(&with("cookie", &format!("{COOKIE}={code}"))));
        a.end_session(&cookie);
        assert!(!a.allows(&cookie));
        assert!(Admin::new(None).allows(&HeaderMap::new()), "--open-admin");
    }

    #[test]
    fn links_and_sessions_are_bounded() {
        let a = Admin::new(Some("0123456789abcdef0123".into()));
        let first = a.new_link().unwrap();
        for _ in 0..MAX_LINKS {
            a.new_link().unwrap();
        }
        assert_eq!(a.redeem(&first), None, "the oldest unused link was dropped");
        assert!(a.links.lock().unwrap().len() <= MAX_LINKS);
        for _ in 0..(MAX_SESSIONS + 10) {
            a.new_session().unwrap();
        }
        assert!(a.sessions.lock().unwrap().len() <= MAX_SESSIONS);
    }

    #[test]
    fn the_token_file_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let t = load_or_create_token(dir.path()).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(load_or_create_token(dir.path()).unwrap(), t);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
