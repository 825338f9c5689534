//! What admission needs from a Messages request body, parsed without copying the body.

use crate::pricing::cost::Ask;
use crate::pricing::model_id;
use serde::Deserialize;
use std::borrow::Cow;

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
struct Body<'a> {
    #[serde(default)]
    model: Option<serde_json::Value>,
    #[serde(default)]
    max_tokens: Option<serde_json::Value>,
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
    let max_tokens = b
        .max_tokens
        .as_ref()
        .and_then(serde_json::Value::as_u64)
        .ok_or(BodyError::MaxTokens)?;
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
        .sum();
    Ok(MessagesRequest {
        new_tokenizer: uses_new_tokenizer(&model),
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
