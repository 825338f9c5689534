//! What admission needs from a Messages request body, parsed without copying the body.

use crate::pricing::cost::Ask;
use crate::pricing::model_id;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::ops::Range;

/// Web search without `max_uses` has no stated ceiling; this many searches are reserved.
pub const DEFAULT_WEB_SEARCH_USES: u64 = 10;

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    max_uses: Option<u64>,
}

#[derive(Deserialize)]
struct Thinking<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    budget_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(default)]
    model: Option<serde_json::Value>,
    #[serde(borrow, default)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    thinking: Option<Thinking<'a>>,
    #[serde(borrow, default)]
    mcp_servers: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default)]
    tools: Option<Vec<Tool<'a>>>,
    #[serde(borrow, default)]
    inference_geo: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    speed: Option<Cow<'a, str>>,
}

/// A Messages request as admission sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessagesRequest {
    pub model: String,
    pub stream: bool,
    /// The worst case, before the input estimate is filled in.
    pub ask: Ask,
    pub new_tokenizer: bool,
    /// Where the top-level `max_tokens` number is in the body, for clamping.
    pub max_tokens_at: Option<Range<usize>>,
    /// `thinking.budget_tokens` when thinking is enabled: a clamp must stay above it.
    pub thinking_budget: Option<u64>,
    /// Tools the API runs itself (web search, web fetch, code execution, MCP) loop inside one
    /// request and can bill far more input than the prompt; the reservation then keeps its
    /// input estimate until the end.
    pub server_tools: bool,
}

/// Tool types the client runs: the API never loops on them within a request.
const CLIENT_TOOL_TYPES: [&str; 5] = ["custom", "bash_", "text_editor_", "computer_", "memory_"];

#[derive(Deserialize)]
struct Messages<'a> {
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
}

/// The loop guard's fingerprint of a request: its model and its messages, as sent.
/// The request's `tags` taken out of its body (the upstream never sees them), with the value
/// under `name`: the project Claude Code names for a signed-in developer (its gateway
/// protocol's billing group). None when the body has no top-level `tags`.
pub fn take_tags(body: &[u8], name: &str) -> Option<(Vec<u8>, Option<String>)> {
    memchr::memmem::find(body, b"\"tags\"")?;
    let mut top: std::collections::BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(body).ok()?;
    let tags = top.remove("tags")?;
    let project =
        serde_json::from_str::<std::collections::HashMap<String, serde_json::Value>>(tags.get())
            .ok()
            .and_then(|t| t.get(name)?.as_str().map(str::to_string))
            .filter(|p| !p.is_empty() && p.len() <= 200 && !p.chars().any(char::is_control));
    Some((serde_json::to_vec(&top).ok()?, project))
}

pub fn fingerprint(body: &[u8], model: &str) -> u64 {
    let messages = serde_json::from_slice::<Messages<'_>>(body)
        .ok()
        .and_then(|m| m.messages)
        .map_or(&b""[..], |m| m.get().as_bytes());
    crate::budget::repeats::fingerprint(model, messages)
}

/// The body with its top-level `max_tokens` set to `n`: the number's bytes are replaced and
/// nothing else changes.
pub fn with_max_tokens(body: &[u8], at: &Range<usize>, n: u64) -> Vec<u8> {
    let digits = n.to_string();
    let mut out = Vec::with_capacity(body.len() + digits.len());
    out.extend_from_slice(&body[..at.start]);
    out.extend_from_slice(digits.as_bytes());
    out.extend_from_slice(&body[at.end..]);
    out
}

/// Why a body was refused before anything was forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error(
        "the request body is not valid JSON ({0}); send a JSON object as described in the Messages API"
    )]
    Json(String),
    #[error(
        "the request body has no 'model' string; name the model to use, e.g. \"claude-sonnet-4-6\""
    )]
    Model,
    #[error(
        "the request body's 'max_tokens' is missing or not a whole number ≥ 0; it caps the output and is required"
    )]
    MaxTokens,
}

pub fn parse(body: &[u8]) -> Result<MessagesRequest, BodyError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(BodyError::Json("expected a JSON object".into()));
    }
    let b: Body<'_> = serde_json::from_slice(body).map_err(|e| BodyError::Json(e.to_string()))?;
    let model = match b.model {
        Some(serde_json::Value::String(m)) if !m.is_empty() => m,
        _ => return Err(BodyError::Model),
    };
    let raw = b.max_tokens.ok_or(BodyError::MaxTokens)?;
    let max_tokens: u64 = serde_json::from_str(raw.get()).map_err(|_| BodyError::MaxTokens)?;
    let start = (raw.get().as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    let max_tokens_at = Some(start..start + raw.get().len())
        .filter(|r| body.get(r.clone()) == Some(raw.get().as_bytes()));
    let thinking_budget = b
        .thinking
        .as_ref()
        .filter(|t| t.kind.as_deref() == Some("enabled"))
        .map(|t| t.budget_tokens.unwrap_or(0));
    let server_tools = b.mcp_servers.is_some_and(|m| m.get() != "null")
        || b.tools.iter().flatten().any(|t| {
            t.kind
                .as_deref()
                .is_some_and(|k| !CLIENT_TOOL_TYPES.iter().any(|c| k.starts_with(c)))
        });
    let web_search_max_uses = b
        .tools
        .iter()
        .flatten()
        .filter(|t| {
            t.kind
                .as_deref()
                .is_some_and(|k| k.starts_with("web_search"))
        })
        .map(|t| t.max_uses.unwrap_or(DEFAULT_WEB_SEARCH_USES))
        .fold(0u64, u64::saturating_add);
    Ok(MessagesRequest {
        new_tokenizer: uses_new_tokenizer(&model),
        max_tokens_at,
        thinking_budget,
        server_tools,
        model,
        stream: b.stream.unwrap_or(false),
        ask: Ask {
            input_tokens: 0,
            max_tokens,
            cache_control: memchr::memmem::find(body, b"\"cache_control\"").is_some(),
            web_search_max_uses,
            geo_us: b.inference_geo.as_deref() == Some("us"),
            fast: b.speed.as_deref() == Some("fast"),
        },
    })
}

/// Models before Opus 4.7 use the older tokenizer; everything newer or unknown is assumed
/// to use the one that yields up to 35 % more tokens (the conservative choice).
fn uses_new_tokenizer(model: &str) -> bool {
    const OLD_FAMILIES: [&str; 4] = ["claude-2", "claude-3", "claude-sonnet-4", "claude-haiku-4"];
    const OLD_OPUS: [&str; 5] = [
        "claude-opus-4",
        "claude-opus-4-0",
        "claude-opus-4-1",
        "claude-opus-4-5",
        "claude-opus-4-6",
    ];
    let family = model_id::normalise(model);
    let old = OLD_OPUS.contains(&family.as_str())
        || OLD_FAMILIES.iter().any(|p| {
            family == *p
                || family
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.starts_with('-'))
        });
    !old
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_what_admission_needs() {
        let r = parse(br#"{"model":"claude-sonnet-4-6","max_tokens":1024,"stream":true,"inference_geo":"us",
            "system":[{"type":"text","text":"x","cache_control":{"type":"ephemeral"}}],
            "tools":[{"type":"web_search_20250305","name":"web_search","max_uses":3},{"name":"f","input_schema":{}}],
            "messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(r.model, "claude-sonnet-4-6");
        assert!(r.stream && r.ask.cache_control && r.ask.geo_us && !r.ask.fast && !r.new_tokenizer);
        assert_eq!((r.ask.max_tokens, r.ask.web_search_max_uses), (1024, 3));
        let unbounded = parse(br#"{"model":"claude-opus-5","max_tokens":0,"speed":"fast","tools":[{"type":"web_search_20260209"}]}"#).unwrap();
        assert_eq!(unbounded.ask.web_search_max_uses, DEFAULT_WEB_SEARCH_USES);
        assert!(unbounded.ask.fast && unbounded.new_tokenizer);
    }

    #[test]
    fn clamping_rewrites_only_the_top_level_max_tokens_number() {
        let cases: [&[u8]; 4] = [
            br#"{"model":"claude-opus-4-8","max_tokens":32000,"messages":[]}"#,
            b"{\"messages\":[{\"role\":\"user\",\"content\":\"max_tokens: 9\"}],\n  \"max_tokens\" :  128000 ,\"model\":\"m\"}",
            br#"{"metadata":{"max_tokens":7},"model":"m","max_tokens":5000}"#,
            br#"{"model":"m","max_tokens":5000,"thinking":{"type":"enabled","budget_tokens":2048}}"#,
        ];
        for body in cases {
            let r = parse(body).unwrap();
            let at = r.max_tokens_at.clone().unwrap();
            let out = with_max_tokens(body, &at, 1024);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["max_tokens"], 1024, "{}", String::from_utf8_lossy(body));
            let mut before: serde_json::Value = serde_json::from_slice(body).unwrap();
            before["max_tokens"] = 1024.into();
            assert_eq!(v, before, "nothing else changed");
            assert_eq!(&out[..at.start], &body[..at.start]);
            assert_eq!(&out[at.start + 4..], &body[at.end..]);
        }
        assert_eq!(parse(cases[3]).unwrap().thinking_budget, Some(2048));
        assert_eq!(parse(cases[0]).unwrap().thinking_budget, None);
    }

    #[test]
    fn server_tools_are_told_from_client_tools() {
        let with = |tools: &str| {
            parse(format!(r#"{{"model":"m","max_tokens":5,"tools":{tools}}}"#).as_bytes())
                .unwrap()
                .server_tools
        };
        assert!(!with(
            r#"[{"name":"Read","input_schema":{}},{"type":"bash_20250124","name":"bash"}]"#
        ));
        assert!(!with(
            r#"[{"type":"text_editor_20250728","name":"str_replace_based_edit_tool"}]"#
        ));
        assert!(with(
            r#"[{"type":"web_fetch_20250910","name":"web_fetch"}]"#
        ));
        assert!(with(
            r#"[{"type":"code_execution_20250825","name":"code_execution"}]"#
        ));
        let mcp = parse(
            br#"{"model":"m","max_tokens":5,"mcp_servers":[{"type":"url","url":"https://x"}]}"#,
        )
        .unwrap();
        assert!(mcp.server_tools);
    }

    #[test]
    fn refuses_what_cannot_be_admitted() {
        assert!(matches!(parse(b"{\"model\":"), Err(BodyError::Json(_))));
        assert!(matches!(parse(b"[1,2]"), Err(BodyError::Json(_))));
        assert_eq!(parse(br#"{"max_tokens":5}"#), Err(BodyError::Model));
        assert_eq!(
            parse(br#"{"model":"","max_tokens":5}"#),
            Err(BodyError::Model)
        );
        assert_eq!(parse(br#"{"model":"m"}"#), Err(BodyError::MaxTokens));
        assert_eq!(
            parse(br#"{"model":"m","max_tokens":-1}"#),
            Err(BodyError::MaxTokens)
        );
        assert_eq!(
            parse(br#"{"model":"m","max_tokens":1.5}"#),
            Err(BodyError::MaxTokens)
        );
    }

    #[test]
    fn tokenizer_generation_by_model() {
        for (m, new) in [
            ("claude-opus-4-6", false),
            ("claude-opus-4-7", true),
            ("claude-sonnet-4-5-20250929", false),
            ("claude-haiku-4-5", false),
            ("claude-haiku-5-5", true),
            ("claude-fable-5", true),
            ("claude-3-haiku-20240307", false),
            ("claude-opus-4-20250514", false),
            ("claude-opus-4-8", true),
            ("mystery", true),
        ] {
            assert_eq!(uses_new_tokenizer(m), new, "{m}");
        }
    }
}
