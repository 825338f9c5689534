//! Claude Code's sign-in: the OAuth 2.0 device authorization grant (RFC 8628) as its gateway
//! protocol speaks it. Claude Code asks for a code; the admin approves it in the dashboard for
//! a budget; the next poll gets an access token. An approved sign-in is a key of that budget
//! (`kind: "sign_in"`), so it is charged, listed and revoked like one; its token is a JWT this
//! proxy signs (Claude Code reads its `exp`), kept only as a hash (docs/claude-code.md).

use super::Service;
use super::keys::Terms;
use crate::budget::period;
use crate::error::HttpError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ts_rs::TS;

/// The encoded header of every token this proxy signs (`{"alg":"HS256","typ":"JWT","kid":
/// "agent-budget"}`) and its dot: how a sign-in's token is told from any other credential,
/// so that it is never forwarded upstream.
pub const TOKEN_PREFIX: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImFnZW50LWJ1ZGdldCJ9.";
/// The name of the billing-group tag a sign-in's token carries: Claude Code then sends the
/// developer's `attributionProject` under it in each request's `tags`, recorded as `project`.
pub const PROJECT_TAG: &str = "project";
/// How long a user code waits for approval.
const CODE_TTL: Duration = Duration::from_secs(600);
/// The least time between two polls of one code, in seconds (RFC 8628 §3.5).
const INTERVAL: u64 = 5;
/// How long an access token lasts; Claude Code then signs in again.
const TOKEN_DAYS: i64 = 30;
/// Sign-ins waiting at once; more are refused until some are approved, denied or expire.
const MAX_PENDING: usize = 64;
/// Wrong user codes that may be tried per minute (RFC 8628 §5.1). Only a signed-in admin can
/// enter codes, so the limit is the server's, not each address's: stronger against guessing.
const MAX_GUESSES: u32 = 10;
/// Base-20, no vowels (RFC 8628 §6.1): no words, nothing to misread.
const CODE_CHARS: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";

/// A sign-in waiting for the admin (`GET /api/sign-ins`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct SignInView {
    pub user_code: String,
    /// The client, as it says (`claude_code`).
    pub surface: Option<String>,
    pub user_agent: Option<String>,
    /// The budget the client was set up for (`agent-budget claude-code setup --budget`), which
    /// the dashboard offers first; the admin still chooses.
    pub budget: Option<String>,
    pub created_at: String,
    pub expires_at: String,
}

/// Who asks to sign in, as it says.
pub struct Client<'a> {
    pub surface: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub budget: Option<&'a str>,
}

/// `POST /api/sign-ins/{user_code}/approve`.
#[derive(Clone, Debug, Deserialize, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct ApproveSignIn {
    /// The budget the sign-in spends (a name or id).
    pub budget: String,
    /// The sign-in's own cap: a scope below its budget (per developer), kept across its
    /// refreshed tokens.
    #[serde(default)]
    #[ts(optional, type = "string | number")]
    pub max_dollars: Option<crate::money::Money>,
    /// The cap's period; the budget's when left out.
    #[serde(default)]
    #[ts(optional)]
    pub period: Option<crate::budget::period::Period>,
}

/// The answer of the device authorization endpoint.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceCode {
    pub device_code: String,
    pub user_code: String,
    pub expires_in: u64,
    pub interval: u64,
}

/// An access token, as the token endpoint answers it.
#[derive(Clone, Debug, Serialize)]
pub struct Token {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    /// Trades for a new token once (`grant_type=refresh_token`).
    pub refresh_token: String,
}

/// Why the token endpoint answers no token (RFC 6749 §5.2, RFC 8628 §3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    Pending,
    SlowDown,
    Denied,
    Expired,
    /// An unknown or used device code.
    InvalidGrant,
    UnsupportedGrant,
    /// Too many sign-ins wait already.
    Busy,
    /// An unknown, used or revoked refresh token: the client signs in again.
    Refresh,
}

impl Refused {
    /// The OAuth error code, and what it means.
    pub fn code(&self) -> (&'static str, &'static str) {
        match self {
            Refused::Pending => (
                "authorization_pending",
                "approve the code in agent-budget's dashboard",
            ),
            Refused::SlowDown => ("slow_down", "poll less often"),
            Refused::Denied => (
                "access_denied",
                "the sign-in was denied in agent-budget's dashboard",
            ),
            Refused::Expired => ("expired_token", "the code expired: sign in again"),
            Refused::InvalidGrant => (
                "invalid_grant",
                "unknown or already used device code: sign in again",
            ),
            Refused::UnsupportedGrant => (
                "unsupported_grant_type",
                "this server grants urn:ietf:params:oauth:grant-type:device_code and refresh_token",
            ),
            Refused::Busy => (
                "slow_down",
                "too many sign-ins are waiting for approval; try again in a minute",
            ),
            Refused::Refresh => (
                "invalid_grant",
                "this sign-in was revoked or its refresh token used: sign in again",
            ),
        }
    }

    /// 401 for a refresh that fails (the protocol's cue to sign in again), else 400.
    pub fn status(&self) -> u16 {
        match self {
            Refused::Refresh => 401,
            _ => 400,
        }
    }
}

enum State {
    Waiting,
    Denied,
    Approved(Token),
}

struct Pending {
    /// SHA-256 of the device code.
    device: [u8; 32],
    user_code: String,
    surface: Option<String>,
    user_agent: Option<String>,
    budget: Option<String>,
    created_at: DateTime<Utc>,
    expires: Instant,
    last_poll: Option<Instant>,
    interval: u64,
    state: State,
}

/// The sign-ins waiting, and the wrong codes tried this minute.
#[derive(Default)]
pub struct SignIns(Mutex<Inner>);

#[derive(Default)]
struct Inner {
    pending: Vec<Pending>,
    /// Since when, and how many wrong codes were tried.
    guesses: Option<(Instant, u32)>,
}

impl SignIns {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Gone a minute after they expire: a late poll still hears "expired".
        inner
            .pending
            .retain(|p| p.expires + Duration::from_secs(60) > now);
        if inner
            .guesses
            .is_some_and(|(since, _)| now - since >= Duration::from_secs(60))
        {
            inner.guesses = None;
        }
        inner
    }
}

impl std::fmt::Debug for SignIns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignIns")
    }
}

fn random_hex() -> Result<String, HttpError> {
    crate::secret_file::random_hex().map_err(|e| {
        HttpError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            format!("agent-budget: no randomness: {e}"),
        )
    })
}

/// A user code, `XXXX-XXXX` in the base-20 alphabet, from random bytes: bytes from 240 up
/// are skipped, so each letter is equally likely (32 random bytes leave 8 all but always).
fn user_code(random: &[u8]) -> String {
    let mut chars: Vec<u8> = random
        .iter()
        .filter(|b| **b < 240)
        .map(|b| CODE_CHARS[usize::from(*b) % CODE_CHARS.len()])
        .take(8)
        .collect();
    while chars.len() < 8 {
        chars.push(CODE_CHARS[chars.len()]);
    }
    let text = String::from_utf8_lossy(&chars).into_owned();
    format!("{}-{}", &text[..4], &text[4..])
}

/// A code as typed: upper case, without the dash or spaces.
fn normalise(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// A client's word about itself: kept when it is short visible text.
fn short(v: Option<&str>) -> Option<String> {
    let v = v?.trim();
    let ok = !v.is_empty() && v.len() <= 200 && v.chars().all(|c| !c.is_control());
    ok.then(|| v.to_string())
}

impl Service {
    /// `POST /oauth/device_authorization`: a new sign-in, waiting for the admin.
    pub fn start_sign_in(
        &self,
        client: Client<'_>,
    ) -> Result<Result<DeviceCode, Refused>, HttpError> {
        let device_code = random_hex()?;
        let code = user_code(&hex::decode(random_hex()?).unwrap_or_default());
        let mut inner = self.sign_ins.lock();
        if inner.pending.len() >= MAX_PENDING {
            return Ok(Err(Refused::Busy));
        }
        inner.pending.push(Pending {
            device: digest(&device_code),
            user_code: code.clone(),
            surface: short(client.surface),
            user_agent: short(client.user_agent),
            budget: short(client.budget),
            created_at: period::now(),
            expires: Instant::now() + CODE_TTL,
            last_poll: None,
            interval: INTERVAL,
            state: State::Waiting,
        });
        drop(inner);
        self.events.emit(crate::events::CoreEvent::SignInRequested {
            user_code: code.clone(),
        });
        Ok(Ok(DeviceCode {
            device_code,
            user_code: code,
            expires_in: CODE_TTL.as_secs(),
            interval: INTERVAL,
        }))
    }

    /// `POST /oauth/token` with the device grant: the token once approved, each code once.
    pub fn poll_sign_in(&self, device_code: &str) -> Result<Token, Refused> {
        let mut inner = self.sign_ins.lock();
        let device = digest(device_code);
        let i = inner
            .pending
            .iter()
            .position(|p| p.device == device)
            .ok_or(Refused::InvalidGrant)?;
        let now = Instant::now();
        let p = &mut inner.pending[i];
        if now >= p.expires {
            inner.pending.remove(i);
            return Err(Refused::Expired);
        }
        let early = p
            .last_poll
            .is_some_and(|t| now - t < Duration::from_secs(p.interval));
        p.last_poll = Some(now);
        match &p.state {
            State::Waiting if early => {
                p.interval += 5;
                Err(Refused::SlowDown)
            }
            State::Waiting => Err(Refused::Pending),
            State::Denied => {
                inner.pending.remove(i);
                Err(Refused::Denied)
            }
            State::Approved(_) => match inner.pending.remove(i).state {
                State::Approved(token) => Ok(token),
                _ => Err(Refused::InvalidGrant),
            },
        }
    }

    /// `GET /api/sign-ins`: the sign-ins waiting for approval.
    pub fn pending_sign_ins(&self) -> Vec<SignInView> {
        let zone = self.config.zone;
        let now = Instant::now();
        self.sign_ins
            .lock()
            .pending
            .iter()
            .filter(|p| matches!(p.state, State::Waiting) && p.expires > now)
            .map(|p| SignInView {
                user_code: p.user_code.clone(),
                surface: p.surface.clone(),
                user_agent: p.user_agent.clone(),
                budget: p.budget.clone(),
                created_at: zone.render(p.created_at),
                expires_at: zone
                    .render(p.created_at + chrono::Duration::seconds(CODE_TTL.as_secs() as i64)),
            })
            .collect()
    }

    /// The waiting sign-in with this user code, or 404 (429 after too many wrong codes).
    fn waiting(inner: &mut Inner, code: &str) -> Result<usize, HttpError> {
        let now = Instant::now();
        let (_, tried) = inner.guesses.get_or_insert((now, 0));
        if *tried >= MAX_GUESSES {
            return Err(HttpError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "agent-budget: too many wrong sign-in codes from this address; wait a minute",
            )
            .with_header("retry-after", "60"));
        }
        let wanted = normalise(code);
        let found = inner.pending.iter().position(|p| {
            normalise(&p.user_code) == wanted
                && matches!(p.state, State::Waiting)
                && p.expires > now
        });
        found.ok_or_else(|| {
            if let Some((_, tried)) = inner.guesses.as_mut() {
                *tried += 1;
            }
            HttpError::not_found(format!(
                "agent-budget: no sign-in is waiting with the code '{code}': it expired, was already answered, or is mistyped"
            ))
        })
    }

    /// `POST /api/sign-ins/{code}/deny`.
    pub fn deny_sign_in(&self, code: &str) -> Result<(), HttpError> {
        let mut inner = self.sign_ins.lock();
        let i = Service::waiting(&mut inner, code)?;
        inner.pending[i].state = State::Denied;
        Ok(())
    }

    /// `POST /api/sign-ins/{code}/approve`: the sign-in becomes a key of `budget`, and its token
    /// waits for the client's next poll.
    pub async fn approve_sign_in(&self, code: &str, input: ApproveSignIn) -> Result<(), HttpError> {
        let surface = {
            let mut inner = self.sign_ins.lock();
            let i = Service::waiting(&mut inner, code)?;
            inner.pending[i].surface.clone()
        };
        let name = format!("{} sign-in", surface.as_deref().unwrap_or("client"));
        let terms = Terms {
            cap: self.key_cap(&input.budget, input.max_dollars, input.period)?,
            ..Terms::default()
        };
        let token = self.issue(&input.budget, &name, terms).await?;
        // Looked up again: the lock was not held across the key's creation. A sign-in that
        // expired or was denied meanwhile gets nothing, and its key goes at once.
        let found = {
            let mut inner = self.sign_ins.lock();
            Service::waiting(&mut inner, code).map(|i| {
                inner.pending[i].state = State::Approved(token.clone());
            })
        };
        if found.is_err() {
            self.revoke_credential(&token.access_token).await?;
        }
        found
    }
}

mod token;
pub use token::token_expiry;

#[cfg(test)]
mod tests;
